//! Tests of the settings: the layers (environment, `.env`, `inside.toml`, defaults), the
//! errors of bad values, and secrets that never print.

use std::collections::HashMap;

use super::*;

fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn defaults_are_the_embedded_setup() {
    let s = Settings::from_map(&HashMap::new()).unwrap();
    assert_eq!(s.database_kind, DatabaseKind::Sqlite);
    assert_eq!(s.bind_addr.to_string(), "0.0.0.0:8000");
    assert!(s.nats_url.is_none() && s.redis_url.is_none());
    assert_eq!(s.access_token_expire_minutes, 15);
    assert_eq!(s.nudge_rate_limit_seconds, 10.0);
    assert_eq!(s.bcrypt_cost, 12);
}

#[test]
fn env_beats_dotenv_beats_toml() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("inside.toml"),
        "app_name = \"toml\"\ndebug = true\nspeaking_rate_threshold = 4.5\n",
    )
    .unwrap();
    std::fs::write(dir.path().join(".env"), "APP_NAME=dotenv\nDEBUG=false\n").unwrap();
    let s = Settings::load_from(dir.path(), map(&[("APP_NAME", "env")])).unwrap();
    assert_eq!(s.app_name, "env");
    assert!(!s.debug, ".env overrides inside.toml");
    assert_eq!(
        s.speaking_rate_threshold, 4.5,
        "inside.toml overrides the default"
    );
}

#[test]
fn out_of_range_threshold_names_the_setting() {
    let err = Settings::from_map(&map(&[("OVERLAP_RATIO_THRESHOLD", "1.5")])).unwrap_err();
    assert!(err.to_string().contains("OVERLAP_RATIO_THRESHOLD"), "{err}");
    let err = Settings::from_map(&map(&[("SPEAKING_RATE_THRESHOLD", "fast")])).unwrap_err();
    assert!(err.to_string().contains("SPEAKING_RATE_THRESHOLD"), "{err}");
}

#[test]
fn bad_urls_are_refused() {
    for (k, v) in [
        ("DATABASE_URL", "mysql://x"),
        ("REDIS_URL", "http://x"),
        ("NATS_URL", "not a url"),
    ] {
        let err = Settings::from_map(&map(&[(k, v), ("DEBUG", "true")])).unwrap_err();
        assert!(err.to_string().contains(k), "{err}");
    }
}

#[test]
fn production_postgres_requires_a_real_secret() {
    let pg = ("DATABASE_URL", "postgres://postgres@127.0.0.1/inside");
    let err = Settings::from_map(&map(&[pg])).unwrap_err();
    assert!(err.to_string().contains("SECRET_KEY"), "{err}");
    assert!(Settings::from_map(&map(&[pg, ("SECRET_KEY", "change-me")])).is_err());
    assert!(Settings::from_map(&map(&[pg, ("DEBUG", "true")])).is_ok());
    let key = "0123456789abcdef0123456789abcdef";
    assert!(Settings::from_map(&map(&[pg, ("SECRET_KEY", key)])).is_ok());
}

#[test]
fn zero_nudge_window_turns_the_limit_off() {
    let s = Settings::from_map(&map(&[("NUDGE_RATE_LIMIT_SECONDS", "0")])).unwrap();
    assert!(s.nudge_window().is_none());
    let s = Settings::from_map(&map(&[("NUDGE_RATE_LIMIT_SECONDS", "0.25")])).unwrap();
    assert_eq!(
        s.nudge_window(),
        Some(std::time::Duration::from_millis(250))
    );
}

#[test]
fn secrets_never_print() {
    let s = Settings::from_map(&map(&[(
        "SECRET_KEY",
        "0123456789abcdef0123456789abcdef-x",
    )]))
    .unwrap();
    assert!(!format!("{s:?}").contains("0123456789abcdef"));
}

#[test]
fn connection_limits_have_production_defaults_and_are_validated() {
    let s = Settings::from_map(&HashMap::new()).unwrap();
    assert_eq!(s.websocket_max_sockets_per_user, 16);
    assert_eq!(s.websocket_max_sockets_per_client, 256);
    assert_eq!(s.http_max_connections_per_client, 512);
    assert_eq!(s.http_header_read_timeout, 30.0);
    assert_eq!(s.http_idle_timeout, 60.0);
    let err = |pairs: &[(&str, &str)]| Settings::from_map(&map(pairs)).unwrap_err().to_string();
    assert!(err(&[("HTTP_HEADER_READ_TIMEOUT", "0")]).contains("HTTP_HEADER_READ_TIMEOUT"));
    assert!(err(&[("HTTP_IDLE_TIMEOUT", "-1")]).contains("HTTP_IDLE_TIMEOUT"));
    assert!(
        err(&[("WEBSOCKET_MAX_SOCKETS_PER_USER", "x")]).contains("WEBSOCKET_MAX_SOCKETS_PER_USER")
    );
    // a TCP cap under the socket cap (or with no socket cap) is refused
    assert!(err(&[("HTTP_MAX_CONNECTIONS_PER_CLIENT", "100")])
        .contains("HTTP_MAX_CONNECTIONS_PER_CLIENT"));
    assert!(err(&[
        ("HTTP_MAX_CONNECTIONS_PER_CLIENT", "100"),
        ("WEBSOCKET_MAX_SOCKETS_PER_CLIENT", "0")
    ])
    .contains("HTTP_MAX_CONNECTIONS_PER_CLIENT"));
    let off = Settings::from_map(&map(&[
        ("HTTP_MAX_CONNECTIONS_PER_CLIENT", "0"),
        ("WEBSOCKET_MAX_SOCKETS_PER_CLIENT", "0"),
        ("WEBSOCKET_MAX_SOCKETS_PER_USER", "0"),
    ]))
    .unwrap();
    assert_eq!(off.http_max_connections_per_client, 0);
}

#[test]
fn invitation_limits_default_and_are_bounded() {
    let s = Settings::from_map(&HashMap::new()).unwrap();
    assert_eq!(
        (
            s.invitation_sender_limit,
            s.invitation_address_limit,
            s.invitation_window_seconds
        ),
        (20, 3, 86_400)
    );
    for (k, v) in [
        ("INVITATION_SENDER_LIMIT", "0"),
        ("INVITATION_ADDRESS_LIMIT", "many"),
        ("INVITATION_WINDOW_SECONDS", "0"),
    ] {
        let err = Settings::from_map(&map(&[(k, v)])).unwrap_err();
        assert!(err.to_string().contains(k), "{err}");
    }
}
