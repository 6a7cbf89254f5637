//! Each way the settings let a process authenticate to NATS, and TLS, against a real
//! nats-server configured for it: settings loaded from a map as the environment would give
//! them, the bus connected with them as the gateway and worker connect
//! (`Bus::connect_nats_with`), and a round trip through the server to prove the session.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use inside_bus::{Bus, BusError, Subjects};
use inside_settings::Settings;
use nkeys::KeyPair;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use inside_testkit::nats_server;

use nats_server::{NatsServer, GATEWAY};

const T: Duration = Duration::from_secs(10);

fn settings(pairs: &[(&str, String)]) -> Settings {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    Settings::from_map(&map).unwrap()
}

/// Connects as the settings say and makes one round trip through the server.
async fn connect(pairs: &[(&str, String)]) -> Result<Bus, BusError> {
    let s = settings(pairs);
    let url = s.nats_url.clone().expect("NATS_URL");
    let bus = tokio::time::timeout(
        T,
        Bus::connect_nats_with(&url, "credentials-test", &s.nats, Subjects::new("t")),
    )
    .await
    .expect("connect ends")?;
    bus.flush().await?;
    Ok(bus)
}

#[tokio::test]
async fn user_and_password_in_the_url_connect_as_that_user() {
    let nats = NatsServer::shipped();
    let with =
        |user: &str, password: &str| format!("nats://{user}:{password}@127.0.0.1:{}", nats.port);
    connect(&[("NATS_URL", with(GATEWAY.user, GATEWAY.password))])
        .await
        .expect("URL credentials connect");
    assert!(
        connect(&[("NATS_URL", with(GATEWAY.user, "wrong"))])
            .await
            .is_err(),
        "a wrong password in the URL connected"
    );
    // the same as separate settings
    connect(&nats.env(GATEWAY))
        .await
        .expect("NATS_USER + NATS_PASSWORD connect");
}

#[tokio::test]
async fn a_token_connects_from_its_setting_and_from_the_url() {
    let nats = NatsServer::with_config("authorization { token: \"s3cret-t0ken\" }\n");
    connect(&[
        ("NATS_URL", nats.url()),
        ("NATS_TOKEN", "s3cret-t0ken".into()),
    ])
    .await
    .expect("NATS_TOKEN connects");
    connect(&[(
        "NATS_URL",
        format!("nats://s3cret-t0ken@127.0.0.1:{}", nats.port),
    )])
    .await
    .expect("a token in the URL connects");
    assert!(
        connect(&[("NATS_URL", nats.url()), ("NATS_TOKEN", "other".into())])
            .await
            .is_err()
    );
}

#[tokio::test]
async fn an_nkey_seed_connects_and_another_key_does_not() {
    let user = KeyPair::new_user();
    let nats = NatsServer::with_config(&format!(
        "authorization {{ users = [ {{ nkey: {} }} ] }}\n",
        user.public_key()
    ));
    connect(&[
        ("NATS_URL", nats.url()),
        ("NATS_NKEY_SEED", user.seed().unwrap()),
    ])
    .await
    .expect("the seed connects");
    let stranger = KeyPair::new_user();
    assert!(connect(&[
        ("NATS_URL", nats.url()),
        ("NATS_NKEY_SEED", stranger.seed().unwrap()),
    ])
    .await
    .is_err());
}

/// A JWT as nsc makes them: `ed25519-nkey` signed by `issuer`.
fn jwt(issuer: &KeyPair, subject: &str, nats: serde_json::Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let claims = serde_json::json!({
        "jti": uuid::Uuid::new_v4().simple().to_string().to_uppercase(),
        "iat": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        "iss": issuer.public_key(),
        "name": "inside-test",
        "sub": subject,
        "nats": nats,
    });
    let body = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
    let signature = issuer.sign(body.as_bytes()).unwrap();
    format!("{body}.{}", URL_SAFE_NO_PAD.encode(signature))
}

#[tokio::test]
async fn a_creds_file_connects_to_an_operator_mode_server() {
    let operator = KeyPair::new_operator();
    let account = KeyPair::new_account();
    let user = KeyPair::new_user();
    let unlimited = serde_json::json!({"subs": -1, "data": -1, "payload": -1});
    let operator_jwt = jwt(
        &operator,
        &operator.public_key(),
        serde_json::json!({"type": "operator", "version": 2}),
    );
    let account_jwt = jwt(
        &operator,
        &account.public_key(),
        serde_json::json!({"type": "account", "version": 2, "limits": {
            "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
            "wildcards": true, "conn": -1, "leaf": -1}}),
    );
    let mut user_claims = unlimited.clone();
    user_claims["type"] = "user".into();
    user_claims["version"] = 2.into();
    let user_jwt = jwt(&account, &user.public_key(), user_claims);
    let nats = NatsServer::with_config(&format!(
        "operator: \"{operator_jwt}\"\nresolver: MEMORY\nresolver_preload: {{\n  {}: \"{account_jwt}\"\n}}\n",
        account.public_key()
    ));
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("user.creds");
    std::fs::write(
        &creds,
        format!(
            "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\n\
             -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
            user.seed().unwrap()
        ),
    )
    .unwrap();
    connect(&[
        ("NATS_URL", nats.url()),
        ("NATS_CREDS_FILE", creds.display().to_string()),
    ])
    .await
    .unwrap_or_else(|e| panic!("the creds file connects: {e}\n{}", nats.log()));
    // a user the account did not sign
    let stranger = KeyPair::new_user();
    let mut claims = unlimited;
    claims["type"] = "user".into();
    claims["version"] = 2.into();
    let forged = jwt(&KeyPair::new_account(), &stranger.public_key(), claims);
    std::fs::write(
        &creds,
        format!(
            "-----BEGIN NATS USER JWT-----\n{forged}\n------END NATS USER JWT------\n\n\
             -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
            stranger.seed().unwrap()
        ),
    )
    .unwrap();
    assert!(connect(&[
        ("NATS_URL", nats.url()),
        ("NATS_CREDS_FILE", creds.display().to_string()),
    ])
    .await
    .is_err());
}

/// A throwaway CA, and a server and a client certificate it signed (`openssl` CLI).
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .current_dir(dir.path())
                .args(args)
                .output()
                .unwrap_or_else(|e| panic!("the TLS tests need the openssl CLI: {e}"));
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        run(&[
            &["req", "-x509", "-days", "1", "-subj", "/CN=inside-test-ca"][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.pem"],
            &["-addext", "basicConstraints=critical,CA:TRUE"],
            &["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ]
        .concat());
        for (name, usage, san) in [
            ("server", "serverAuth", "IP:127.0.0.1,DNS:localhost"),
            ("client", "clientAuth", "DNS:inside-worker"),
        ] {
            std::fs::write(
                dir.path().join(format!("{name}.ext")),
                format!(
                    "subjectAltName={san}\nbasicConstraints=CA:FALSE\n\
                     keyUsage=critical,digitalSignature\nextendedKeyUsage={usage}\n"
                ),
            )
            .unwrap();
            let key = format!("{name}.key");
            let csr = format!("{name}.csr");
            let pem = format!("{name}.pem");
            let ext = format!("{name}.ext");
            run(&[
                &["req", "-subj", &format!("/CN={name}")][..],
                &ec,
                &["-keyout", &key, "-out", &csr],
            ]
            .concat());
            run(&[
                "x509",
                "-req",
                "-days",
                "1",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-extfile",
                &ext,
            ]);
        }
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// A server that requires TLS, and client certificates when `verify`.
    fn server(&self, verify: bool) -> NatsServer {
        let p = |n: &str| self.path(n);
        NatsServer::with_config(&format!(
            "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {:?}\n  verify: {verify}\n  timeout: 5\n}}\n",
            p("server.pem"),
            p("server.key"),
            p("ca.pem"),
        ))
    }
}

/// Speaks plain NATS protocol to `port`: what the server answers a CONNECT without TLS.
async fn plaintext_connect(port: u16) -> String {
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(T, async {
        // INFO first, then our CONNECT in clear, then whatever the server says before closing
        let n = tcp.read(&mut buf).await.unwrap_or(0);
        seen.extend_from_slice(&buf[..n]);
        let _ = tcp
            .write_all(b"CONNECT {\"verbose\":false}\r\nPING\r\n")
            .await;
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&seen).into_owned()
}

#[tokio::test]
async fn tls_url_with_the_ca_file_connects_and_plaintext_or_an_untrusting_client_does_not() {
    let pki = Pki::new();
    let nats = pki.server(false);
    let tls_url = format!("tls://127.0.0.1:{}", nats.port);
    connect(&[
        ("NATS_URL", tls_url.clone()),
        ("NATS_TLS_CA_FILE", pki.arg("ca.pem")),
    ])
    .await
    .unwrap_or_else(|e| panic!("tls:// with the CA connects: {e}\n{}", nats.log()));
    // without the CA the server's certificate is not trusted
    assert!(connect(&[("NATS_URL", tls_url)]).await.is_err());
    // and plain text gets no session: the server answers with an error and hangs up
    let answer = plaintext_connect(nats.port).await;
    assert!(
        !answer.contains("PONG"),
        "a plaintext client got a session: {answer}"
    );
    assert!(answer.contains("tls_required\":true"), "{answer}");
}

#[tokio::test]
async fn required_tls_refuses_a_server_without_tls() {
    let nats = NatsServer::with_config("authorization { token: \"t\" }\n");
    assert!(connect(&[
        ("NATS_URL", nats.url()),
        ("NATS_TOKEN", "t".into()),
        ("NATS_TLS_REQUIRED", "true".into()),
    ])
    .await
    .is_err());
    connect(&[("NATS_URL", nats.url()), ("NATS_TOKEN", "t".into())])
        .await
        .expect("the same without required TLS connects");
}

#[tokio::test]
async fn a_client_certificate_is_presented_to_a_verifying_server() {
    let pki = Pki::new();
    let nats = pki.server(true);
    let ca = ("NATS_TLS_CA_FILE", pki.arg("ca.pem"));
    let url = ("NATS_URL", format!("tls://127.0.0.1:{}", nats.port));
    connect(&[
        url.clone(),
        ca.clone(),
        ("NATS_TLS_CERT_FILE", pki.arg("client.pem")),
        ("NATS_TLS_KEY_FILE", pki.arg("client.key")),
    ])
    .await
    .unwrap_or_else(|e| panic!("the client certificate connects: {e}\n{}", nats.log()));
    assert!(
        connect(&[url, ca]).await.is_err(),
        "connected without a client certificate"
    );
}
