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
    // a share of 1 or more could never be exceeded; under one half two members could both hold it
    for v in ["1", "0.4"] {
        let err = Settings::from_map(&map(&[("BALANCE_SHARE", v)])).unwrap_err();
        assert!(err.to_string().contains("BALANCE_SHARE"), "{err}");
    }
    let err = Settings::from_map(&map(&[("BALANCE_MIN_SECONDS", "-1")])).unwrap_err();
    assert!(err.to_string().contains("BALANCE_MIN_SECONDS"), "{err}");
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
fn the_resume_history_defaults_to_a_thousand_events_for_two_minutes() {
    let s = Settings::from_map(&HashMap::new()).unwrap();
    assert_eq!(
        s.resume_window(),
        Some((1_000, std::time::Duration::from_secs(120)))
    );
    let s = Settings::from_map(&map(&[
        ("WEBSOCKET_RESUME_EVENTS", "50"),
        ("WEBSOCKET_RESUME_SECONDS", "2.5"),
    ]))
    .unwrap();
    assert_eq!(
        s.resume_window(),
        Some((50, std::time::Duration::from_millis(2_500)))
    );
    assert!(!s.websocket_resume_in_memory, "on disk unless asked");
    let off = Settings::from_map(&map(&[("WEBSOCKET_RESUME_EVENTS", "0")])).unwrap();
    assert_eq!(off.resume_window(), None);
    for (k, v) in [
        ("WEBSOCKET_RESUME_EVENTS", "-1"),
        ("WEBSOCKET_RESUME_EVENTS", "1000000"),
        ("WEBSOCKET_RESUME_SECONDS", "0"),
        ("WEBSOCKET_RESUME_SECONDS", "inf"),
    ] {
        let err = Settings::from_map(&map(&[(k, v)])).unwrap_err();
        assert!(err.to_string().contains(k), "{err}");
    }
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

#[test]
fn placeholder_and_low_entropy_keys_are_refused_outside_debug() {
    for db in [
        "sqlite://./data/x.db",
        "postgres://postgres@127.0.0.1/inside",
    ] {
        for key in [
            // The seed's placeholder and the README's old example.
            "change-me-in-production-use-a-secure-random-string",
            "change-me-to-at-least-32-bytes-of-secret",
            "CHANGEME-please-0123456789abcdefghijklmnop",
            "secret",
            // Long but drawn from a handful of characters.
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "abcdefghabcdefghabcdefghabcdefghabcdefgh",
            "0123456789abcdef",
        ] {
            let err = Settings::from_map(&map(&[("DATABASE_URL", db), ("SECRET_KEY", key)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains("SECRET_KEY"), "{key}: {err}");
            assert!(err.contains("openssl rand -hex 32"), "{key}: {err}");
            // DEBUG=true is local development: any key goes.
            assert!(
                Settings::from_map(&map(&[
                    ("DATABASE_URL", db),
                    ("SECRET_KEY", key),
                    ("DEBUG", "true")
                ]))
                .is_ok(),
                "{key}"
            );
        }
    }
}

#[test]
fn random_keys_and_the_test_suites_keys_pass() {
    let pg = ("DATABASE_URL", "postgres://postgres@127.0.0.1/inside");
    // `openssl rand -hex 32` and `openssl rand -base64 32` shapes.
    for key in [
        "9f2c4e7a1b3d5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8",
        "3b1f0c9d8e7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c",
        "q0Zt9XvB3kLm7PqR2sT8uVwX1yZa4bCd6eFg5hIj0kE=",
        "test-secret-key-0123456789abcdef0123",
        "bench-secret-0123456789abcdef0123456789",
        "fleet-test-secret-0123456789abcdef0123",
        "compose-check-secret-0123456789abcdef",
    ] {
        let r = Settings::from_map(&map(&[pg, ("SECRET_KEY", key)]));
        assert!(r.is_ok(), "{key}: {:?}", r.err());
    }
}

#[test]
fn abuse_limits_have_defaults_and_ranges() {
    let s = Settings::from_map(&HashMap::new()).unwrap();
    assert_eq!(
        (
            s.login_max_failures,
            s.login_address_max_failures,
            s.signup_max_per_address,
            s.signup_window_seconds,
            s.bcrypt_queue
        ),
        (10, 100, 20, 3600, 16)
    );
    for (k, v) in [
        ("LOGIN_ADDRESS_MAX_FAILURES", "0"),
        ("SIGNUP_MAX_PER_ADDRESS", "0"),
        ("SIGNUP_WINDOW_SECONDS", "0"),
        ("BCRYPT_QUEUE", "-1"),
    ] {
        let err = Settings::from_map(&map(&[(k, v)])).unwrap_err();
        assert!(err.to_string().contains(k), "{err}");
    }
}

#[test]
fn trusted_proxies_are_ip_addresses_and_none_by_default() {
    assert!(Settings::from_map(&HashMap::new())
        .unwrap()
        .trusted_proxies
        .is_empty());
    let s = Settings::from_map(&map(&[("TRUSTED_PROXIES", "10.0.0.1, ::1")])).unwrap();
    assert_eq!(s.trusted_proxies.len(), 2);
    let err = Settings::from_map(&map(&[("TRUSTED_PROXIES", "10.0.0.0/8")])).unwrap_err();
    assert!(err.to_string().contains("TRUSTED_PROXIES"), "{err}");
}

#[test]
fn nats_without_redis_is_refused_unless_process_local_limits_are_wanted() {
    let nats = ("NATS_URL", "nats://127.0.0.1:4222");
    let err = Settings::from_map(&map(&[nats]))
        .unwrap()
        .require_shared_limits()
        .unwrap_err()
        .to_string();
    for name in ["NATS_URL", "REDIS_URL", "ALLOW_PROCESS_LOCAL_LIMITS"] {
        assert!(err.contains(name), "{name}: {err}");
    }
    for ok in [
        vec![nats, ("REDIS_URL", "redis://127.0.0.1:6379")],
        vec![nats, ("ALLOW_PROCESS_LOCAL_LIMITS", "true")],
        // the embedded default shares nothing: one process, one limiter
        vec![],
    ] {
        let s = Settings::from_map(&map(&ok)).unwrap();
        assert!(s.require_shared_limits().is_ok(), "{ok:?}");
    }
    assert!(
        !Settings::from_map(&HashMap::new())
            .unwrap()
            .allow_process_local_limits
    );
    let err = Settings::from_map(&map(&[("ALLOW_PROCESS_LOCAL_LIMITS", "maybe")])).unwrap_err();
    assert!(
        err.to_string().contains("ALLOW_PROCESS_LOCAL_LIMITS"),
        "{err}"
    );
}

#[test]
fn presence_timers_default_and_the_ttl_outlasts_two_heartbeats() {
    let s = Settings::from_map(&HashMap::new()).unwrap();
    assert_eq!(
        (s.presence_heartbeat_seconds, s.presence_ttl_seconds),
        (5.0, 15.0)
    );
    let s = Settings::from_map(&map(&[
        ("PRESENCE_HEARTBEAT_SECONDS", "0.5"),
        ("PRESENCE_TTL_SECONDS", "1"),
    ]))
    .unwrap();
    assert_eq!(
        (s.presence_heartbeat_seconds, s.presence_ttl_seconds),
        (0.5, 1.0)
    );
    for pairs in [
        vec![("PRESENCE_TTL_SECONDS", "9")],
        vec![("PRESENCE_HEARTBEAT_SECONDS", "0")],
        vec![("PRESENCE_TTL_SECONDS", "soon")],
    ] {
        let err = Settings::from_map(&map(&pairs)).unwrap_err().to_string();
        assert!(err.contains(pairs[0].0), "{pairs:?}: {err}");
    }
}

#[test]
fn log_format_is_text_or_json_and_anything_else_names_the_setting() {
    let s = Settings::from_map(&HashMap::new()).unwrap();
    assert_eq!(s.log_format, LogFormat::Text);
    let s = Settings::from_map(&map(&[("LOG_FORMAT", "JSON")])).unwrap();
    assert_eq!(s.log_format, LogFormat::Json);
    let err = Settings::from_map(&map(&[("LOG_FORMAT", "xml")]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("LOG_FORMAT") && err.contains("text or json"),
        "{err}"
    );
}
