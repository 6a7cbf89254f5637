//! Tests of the NATS credentials and TLS settings: each way of authenticating, credentials
//! taken out of the URL, conflicting ways refused by name, files checked at start, and
//! secrets that never print.

use std::collections::HashMap;

use secrecy::ExposeSecret;

use crate::{NatsAuth, Settings};

const URL: &str = "nats://127.0.0.1:4222";
/// A syntactically valid user seed (its checksum is the bus's concern).
const SEED: &str = "SUAMLK2ZNL35WSMW37E7UD4VZ7ELPKW7DHC3BWBSD2GCZ7IUQQXZIORRBU";

fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn load(pairs: &[(&str, &str)]) -> Result<Settings, crate::SettingsError> {
    Settings::from_map(&map(pairs))
}

fn creds_file(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("user.creds");
    std::fs::write(
        &path,
        format!(
            "-----BEGIN NATS USER JWT-----\neyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.e30.c2ln\n\
             ------END NATS USER JWT------\n\n************************* IMPORTANT *************************\n\n\
             -----BEGIN USER NKEY SEED-----\n{SEED}\n------END USER NKEY SEED------\n"
        ),
    )
    .unwrap();
    path
}

#[test]
fn no_nats_settings_mean_no_credentials_and_no_tls() {
    let s = load(&[("NATS_URL", URL)]).unwrap();
    assert_eq!(s.nats_url.as_deref(), Some(URL));
    assert!(matches!(s.nats.auth, NatsAuth::None));
    assert!(!s.nats.tls.required && s.nats.tls.ca_file.is_none());
}

#[test]
fn user_and_password_in_the_url_become_options_and_leave_the_url() {
    let s = load(&[(
        "NATS_URL",
        "nats://gateway:p%40ss%3Aword@nats.internal:4222",
    )])
    .unwrap();
    assert_eq!(s.nats_url.as_deref(), Some("nats://nats.internal:4222"));
    let NatsAuth::UserPassword { user, password } = &s.nats.auth else {
        panic!("{:?}", s.nats.auth);
    };
    assert_eq!(user, "gateway");
    assert_eq!(password.expose_secret(), "p@ss:word", "percent-decoded");
}

#[test]
fn a_lone_user_part_in_the_url_is_a_token() {
    let s = load(&[("NATS_URL", "nats://s3cr3t-token@127.0.0.1:4222")]).unwrap();
    assert_eq!(s.nats_url.as_deref(), Some(URL));
    let NatsAuth::Token(token) = &s.nats.auth else {
        panic!("{:?}", s.nats.auth);
    };
    assert_eq!(token.expose_secret(), "s3cr3t-token");
}

#[test]
fn each_way_of_authenticating_is_read() {
    let s = load(&[("NATS_URL", URL), ("NATS_TOKEN", "t0k3n")]).unwrap();
    assert!(matches!(&s.nats.auth, NatsAuth::Token(t) if t.expose_secret() == "t0k3n"));
    let s = load(&[
        ("NATS_URL", URL),
        ("NATS_USER", "worker"),
        ("NATS_PASSWORD", "pw"),
    ])
    .unwrap();
    assert!(matches!(&s.nats.auth,
        NatsAuth::UserPassword { user, password } if user == "worker" && password.expose_secret() == "pw"));
    let s = load(&[("NATS_URL", URL), ("NATS_NKEY_SEED", SEED)]).unwrap();
    assert!(matches!(&s.nats.auth, NatsAuth::NkeySeed(k) if k.expose_secret() == SEED));
    let dir = tempfile::tempdir().unwrap();
    let creds = creds_file(dir.path());
    let s = load(&[
        ("NATS_URL", URL),
        ("NATS_CREDS_FILE", creds.to_str().unwrap()),
    ])
    .unwrap();
    assert!(matches!(&s.nats.auth, NatsAuth::CredsFile(p) if p == &creds));
}

#[test]
fn two_ways_of_authenticating_are_refused_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let creds = creds_file(dir.path());
    let creds = creds.to_str().unwrap();
    for (pairs, first, second) in [
        (
            vec![("NATS_CREDS_FILE", creds), ("NATS_TOKEN", "t")],
            "NATS_CREDS_FILE",
            "NATS_TOKEN",
        ),
        (
            vec![
                ("NATS_NKEY_SEED", SEED),
                ("NATS_USER", "u"),
                ("NATS_PASSWORD", "p"),
            ],
            "NATS_NKEY_SEED",
            "NATS_USER",
        ),
        (
            vec![
                ("NATS_USER", "u"),
                ("NATS_PASSWORD", "p"),
                ("NATS_TOKEN", "t"),
            ],
            "NATS_USER",
            "NATS_TOKEN",
        ),
    ] {
        let mut pairs = pairs;
        pairs.push(("NATS_URL", URL));
        let err = load(&pairs).unwrap_err().to_string();
        assert!(err.contains(first) && err.contains(second), "{err}");
    }
    let err = load(&[
        ("NATS_URL", "nats://u:p@127.0.0.1:4222"),
        ("NATS_TOKEN", "t"),
    ])
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("NATS_URL") && err.contains("NATS_TOKEN"),
        "{err}"
    );
}

#[test]
fn half_a_pair_is_refused() {
    let err = load(&[("NATS_URL", URL), ("NATS_USER", "u")]).unwrap_err();
    assert!(err.to_string().contains("NATS_PASSWORD"), "{err}");
    let err = load(&[("NATS_URL", URL), ("NATS_PASSWORD", "p")]).unwrap_err();
    assert!(err.to_string().contains("NATS_USER"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("client.pem");
    std::fs::write(&cert, "pem").unwrap();
    let err = load(&[
        ("NATS_URL", URL),
        ("NATS_TLS_CERT_FILE", cert.to_str().unwrap()),
    ])
    .unwrap_err();
    assert!(err.to_string().contains("NATS_TLS_KEY_FILE"), "{err}");
    let err = load(&[
        ("NATS_URL", URL),
        ("NATS_TLS_KEY_FILE", cert.to_str().unwrap()),
    ])
    .unwrap_err();
    assert!(err.to_string().contains("NATS_TLS_CERT_FILE"), "{err}");
}

#[test]
fn nats_credentials_without_a_nats_url_are_refused() {
    let err = load(&[("NATS_TOKEN", "t")]).unwrap_err();
    assert!(
        err.to_string().contains("NATS_TOKEN") && err.to_string().contains("NATS_URL"),
        "{err}"
    );
}

#[test]
fn a_bad_seed_or_creds_file_is_refused_at_start() {
    // a public key pasted instead of the seed
    let public = "UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4";
    let err = load(&[("NATS_URL", URL), ("NATS_NKEY_SEED", public)]).unwrap_err();
    assert!(err.to_string().contains("NATS_NKEY_SEED"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.creds");
    let err = load(&[
        ("NATS_URL", URL),
        ("NATS_CREDS_FILE", missing.to_str().unwrap()),
    ])
    .unwrap_err();
    assert!(err.to_string().contains("NATS_CREDS_FILE"), "{err}");
    let not_creds = dir.path().join("other.creds");
    std::fs::write(&not_creds, "user: gateway\n").unwrap();
    let err = load(&[
        ("NATS_URL", URL),
        ("NATS_CREDS_FILE", not_creds.to_str().unwrap()),
    ])
    .unwrap_err();
    assert!(err.to_string().contains("not a NATS .creds file"), "{err}");
}

#[test]
fn tls_url_requires_tls_and_files_must_exist() {
    let s = load(&[("NATS_URL", "tls://127.0.0.1:4222")]).unwrap();
    assert!(s.nats.tls.required, "tls:// means required TLS");
    let err = load(&[
        ("NATS_URL", "tls://127.0.0.1:4222"),
        ("NATS_TLS_REQUIRED", "false"),
    ])
    .unwrap_err();
    assert!(err.to_string().contains("NATS_TLS_REQUIRED"), "{err}");
    let s = load(&[("NATS_URL", URL), ("NATS_TLS_REQUIRED", "true")]).unwrap();
    assert!(s.nats.tls.required);
    let err = load(&[
        ("NATS_URL", URL),
        ("NATS_TLS_CA_FILE", "/nonexistent/ca.pem"),
    ])
    .unwrap_err();
    assert!(err.to_string().contains("NATS_TLS_CA_FILE"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("x.pem");
    std::fs::write(&pem, "pem").unwrap();
    let pem = pem.to_str().unwrap();
    let s = load(&[
        ("NATS_URL", URL),
        ("NATS_TLS_CA_FILE", pem),
        ("NATS_TLS_CERT_FILE", pem),
        ("NATS_TLS_KEY_FILE", pem),
    ])
    .unwrap();
    assert!(s.nats.tls.ca_file.is_some() && s.nats.tls.client_cert.is_some());
}

#[test]
fn nats_secrets_never_print() {
    for pairs in [
        vec![("NATS_URL", "nats://gateway:hunter2-url@127.0.0.1:4222")],
        vec![
            ("NATS_URL", URL),
            ("NATS_USER", "u"),
            ("NATS_PASSWORD", "hunter2-env"),
        ],
        vec![("NATS_URL", URL), ("NATS_TOKEN", "hunter2-token")],
        vec![("NATS_URL", URL), ("NATS_NKEY_SEED", SEED)],
    ] {
        let s = load(&pairs).unwrap();
        let printed = format!("{s:?}");
        assert!(
            !printed.contains("hunter2") && !printed.contains(SEED),
            "{printed}"
        );
    }
}
