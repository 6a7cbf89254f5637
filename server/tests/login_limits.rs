//! Abuse of the password endpoints and of tokens: concurrent login guesses,
//! the owner's login while a stranger guesses, signup floods and the bounded
//! hashing queue, tokens dated in the future. Client addresses are varied by
//! binding the client to other loopback addresses (127.0.0.2, …).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::IpAddr;

use common::*;
use serde_json::{json, Value};

const REDIS: (&str, &str) = ("REDIS_URL", "redis://127.0.0.1:6379");

/// An HTTP client whose connections come from `ip` (any 127.0.0.0/8 address).
fn client_from(ip: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from(ip))
        .build()
        .unwrap()
}

async fn login(
    app: &TestApp,
    from: &reqwest::Client,
    email: &str,
    password: &str,
) -> (u16, Option<u64>, Value) {
    let res = from
        .post(app.url("/v1/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let retry_after = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
    (status, retry_after, res.json().await.unwrap_or(Value::Null))
}

async fn signup_from(
    app: &TestApp,
    from: &reqwest::Client,
    email: &str,
) -> (u16, Option<u64>, Value) {
    let res = from
        .post(app.url("/v1/auth/signup"))
        .json(&json!({"email": email, "password": "correct horse", "name": "Flood"}))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let retry_after = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
    (status, retry_after, res.json().await.unwrap_or(Value::Null))
}

/// 100 wrong passwords at once from one address: at most `LOGIN_MAX_FAILURES`
/// (10) reach bcrypt, the rest are 429 with Retry-After; the owner, from
/// another address, still logs in.
async fn concurrent_guesses_reach_bcrypt_at_most_the_allowance(app: TestApp) {
    let email = unique_email("owner");
    app.signup(&email).await;
    let before = app.state.hasher.verifications();
    let attacker = client_from([127, 0, 0, 1]);
    let mut guesses = tokio::task::JoinSet::new();
    for i in 0..100 {
        let (attacker, url, email) = (attacker.clone(), app.url("/v1/auth/login"), email.clone());
        guesses.spawn(async move {
            let res = attacker
                .post(url)
                .json(&json!({"email": email, "password": format!("guess {i}")}))
                .send()
                .await
                .unwrap();
            let retry = res
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
            let status = res.status().as_u16();
            let body: Value = res.json().await.unwrap();
            (status, retry, body)
        });
    }
    let (mut judged, mut limited) = (0, 0);
    while let Some(outcome) = guesses.join_next().await {
        let (status, retry, body) = outcome.unwrap();
        match status {
            401 => judged += 1,
            429 => {
                limited += 1;
                assert_error(&body, "rate_limited");
                assert!(retry.unwrap() >= 1);
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    let verified = app.state.hasher.verifications() - before;
    assert!(judged <= 10, "{judged} guesses were judged");
    assert_eq!(judged + limited, 100);
    assert_eq!(verified, judged, "every 429 was answered without bcrypt");
    // The attacker's address stays blocked for this email, even with the right password…
    let (s, retry, _) = login(&app, &attacker, &email, "correct horse").await;
    assert_eq!((s, retry.is_some()), (429, true));
    // …but the owner, from their own address, is not locked out.
    let owner = client_from([127, 0, 0, 2]);
    let (s, _, body) = login(&app, &owner, &email, "correct horse").await;
    assert_eq!(s, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_login_guesses_are_bounded_with_the_memory_limiter() {
    concurrent_guesses_reach_bcrypt_at_most_the_allowance(spawn_app(Db::Sqlite).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_login_guesses_are_bounded_with_the_redis_limiter() {
    concurrent_guesses_reach_bcrypt_at_most_the_allowance(
        spawn_app_with(Db::Postgres, &[REDIS]).await,
    )
    .await;
}

/// Once an email has had its allowance of failures, an address that has failed
/// for it waits a growing backoff; an address that never failed does not.
async fn failing_addresses_back_off_but_the_owner_does_not(app: TestApp) {
    let email = unique_email("target");
    app.signup(&email).await;
    let first = client_from([127, 0, 0, 1]);
    for _ in 0..3 {
        assert_eq!(login(&app, &first, &email, "wrong").await.0, 401);
    }
    assert_eq!(login(&app, &first, &email, "wrong").await.0, 429);
    // A second attacking address: its first guess is judged (it has not failed yet)…
    let second = client_from([127, 0, 0, 3]);
    assert_eq!(login(&app, &second, &email, "wrong").await.0, 401);
    // …its next one takes the backoff gate, and the one after waits.
    assert_eq!(login(&app, &second, &email, "wrong").await.0, 401);
    let (s, retry, body) = login(&app, &second, &email, "wrong").await;
    assert_eq!(s, 429, "{body}");
    assert!(retry.unwrap() >= 1);
    // The owner, who never failed, logs in at once.
    let owner = client_from([127, 0, 0, 2]);
    let (s, _, body) = login(&app, &owner, &email, "correct horse").await;
    assert_eq!(s, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_addresses_back_off_with_the_memory_limiter() {
    failing_addresses_back_off_but_the_owner_does_not(
        spawn_app_with(Db::Sqlite, &[("LOGIN_MAX_FAILURES", "3")]).await,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_addresses_back_off_with_the_redis_limiter() {
    failing_addresses_back_off_but_the_owner_does_not(
        spawn_app_with(Db::Postgres, &[REDIS, ("LOGIN_MAX_FAILURES", "3")]).await,
    )
    .await;
}

/// One address failing at many emails (password spraying) hits the per-address limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_guessing_many_emails_is_limited() {
    let app = spawn_app_with(Db::Sqlite, &[("LOGIN_ADDRESS_MAX_FAILURES", "5")]).await;
    let sprayer = client_from([127, 0, 0, 1]);
    for _ in 0..5 {
        assert_eq!(
            login(&app, &sprayer, &unique_email("x"), "wrong").await.0,
            401
        );
    }
    assert_eq!(
        login(&app, &sprayer, &unique_email("x"), "wrong").await.0,
        429
    );
    let other = client_from([127, 0, 0, 2]);
    assert_eq!(
        login(&app, &other, &unique_email("x"), "wrong").await.0,
        401
    );
}

async fn signups_per_client_address_are_limited(app: TestApp) {
    let here = client_from([127, 0, 0, 1]);
    for _ in 0..3 {
        let (s, _, body) = signup_from(&app, &here, &unique_email("s")).await;
        assert_eq!(s, 201, "{body}");
    }
    let (s, retry, body) = signup_from(&app, &here, &unique_email("s")).await;
    assert_eq!(s, 429, "{body}");
    assert_error(&body, "rate_limited");
    assert!(retry.unwrap() >= 1);
    let elsewhere = client_from([127, 0, 0, 2]);
    let (s, _, body) = signup_from(&app, &elsewhere, &unique_email("s")).await;
    assert_eq!(s, 201, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signups_per_address_are_limited_with_the_memory_limiter() {
    signups_per_client_address_are_limited(
        spawn_app_with(Db::Sqlite, &[("SIGNUP_MAX_PER_ADDRESS", "3")]).await,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signups_per_address_are_limited_with_the_redis_limiter() {
    signups_per_client_address_are_limited(
        spawn_app_with(Db::Postgres, &[REDIS, ("SIGNUP_MAX_PER_ADDRESS", "3")]).await,
    )
    .await;
}

/// A signup flood against a full hashing queue is turned away with 503 `busy`
/// and Retry-After, and a login meanwhile is not queued behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signup_flood_gets_busy_and_login_still_passes() {
    let app = spawn_app_with(
        Db::Sqlite,
        &[
            ("BCRYPT_COST", "12"),
            ("BCRYPT_QUEUE", "0"),
            // The owner and the flood of 30 use up all 31 unless a 503 gives its slot back.
            ("SIGNUP_MAX_PER_ADDRESS", "31"),
        ],
    )
    .await;
    let email = unique_email("owner");
    app.signup(&email).await;
    let mut flood = tokio::task::JoinSet::new();
    for _ in 0..30 {
        let (http, url) = (app.http.clone(), app.url("/v1/auth/signup"));
        flood.spawn(async move {
            let res = http
                .post(url)
                .json(&json!({"email": unique_email("flood"), "password": "correct horse", "name": "F"}))
                .send()
                .await
                .unwrap();
            let retry = res.headers().get("retry-after").cloned();
            let status = res.status().as_u16();
            let body: Value = res.json().await.unwrap();
            (status, retry, body)
        });
    }
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let owner = client_from([127, 0, 0, 2]);
    let (s, _, body) = login(&app, &owner, &email, "correct horse").await;
    assert_eq!(s, 200, "login is not queued behind signups: {body}");
    let (mut created, mut busy) = (0, 0);
    while let Some(outcome) = flood.join_next().await {
        let (status, retry, body) = outcome.unwrap();
        match status {
            201 => created += 1,
            503 => {
                busy += 1;
                assert_error(&body, "busy");
                assert!(retry.is_some(), "Retry-After on 503");
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(busy > 0 && created > 0, "created {created}, busy {busy}");
    // Turned-away signups did not count against the address.
    let (s, _, body) =
        signup_from(&app, &client_from([127, 0, 0, 1]), &unique_email("later")).await;
    assert_eq!(s, 201, "{body}");
}

/// Tokens whose `iat` or `nbf` lies in the future (beyond 30 s of clock leeway)
/// are refused, though signed with the server's key.
async fn tokens_dated_in_the_future_are_refused(db: Db) {
    let app = spawn_app(db).await;
    let pair = app.signup(&unique_email("f")).await;
    let uid = pair["user"]["id"].as_str().unwrap();
    let key = app.env["SECRET_KEY"].clone();
    let now = chrono::Utc::now().timestamp();
    let mint = |iat: i64, nbf: Option<i64>| {
        let mut claims =
            json!({"sub": uid, "iat": iat, "exp": now + 600, "jti": uuid::Uuid::new_v4()});
        if let Some(nbf) = nbf {
            claims["nbf"] = json!(nbf);
        }
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(key.as_bytes()),
        )
        .unwrap()
    };
    let (s, _) = app.get("/v1/users/me", Some(&mint(now, None))).await;
    assert_eq!(s, 200, "a token minted now with the key is good");
    for t in [
        mint(now + 3600, None),
        mint(now, Some(now + 3600)),
        mint(now + 120, Some(now + 120)),
    ] {
        let (s, body) = app.get("/v1/users/me", Some(&t)).await;
        assert_eq!(s, 401, "{body}");
        assert_error(&body, "invalid_token");
    }
    let (s, _) = app
        .get("/v1/users/me", Some(&mint(now + 10, Some(now + 10))))
        .await;
    assert_eq!(s, 200, "clock drift within the leeway is tolerated");
}

both_databases!(tokens_dated_in_the_future_are_refused);

async fn login_forwarded(app: &TestApp, forwarded_for: &str, email: &str, password: &str) -> u16 {
    app.http
        .post(app.url("/v1/auth/login"))
        .header("x-forwarded-for", forwarded_for)
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// X-Forwarded-For is ignored unless the peer is a trusted proxy: a guesser
/// cannot escape the limit by writing a new address into the header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_names_the_client_only_behind_a_trusted_proxy() {
    let app = spawn_app_with(Db::Sqlite, &[("LOGIN_MAX_FAILURES", "2")]).await;
    let email = unique_email("xff");
    app.signup(&email).await;
    assert_eq!(
        login_forwarded(&app, "10.0.0.1", &email, "wrong").await,
        401
    );
    assert_eq!(
        login_forwarded(&app, "10.0.0.2", &email, "wrong").await,
        401
    );
    assert_eq!(
        login_forwarded(&app, "10.0.0.3", &email, "wrong").await,
        429
    );

    let app = spawn_app_with(
        Db::Sqlite,
        &[
            ("LOGIN_MAX_FAILURES", "2"),
            ("TRUSTED_PROXIES", "127.0.0.1"),
        ],
    )
    .await;
    app.signup(&email).await;
    assert_eq!(
        login_forwarded(&app, "10.0.0.1", &email, "wrong").await,
        401
    );
    assert_eq!(
        login_forwarded(&app, "10.0.0.1", &email, "wrong").await,
        401
    );
    assert_eq!(
        login_forwarded(&app, "10.0.0.1", &email, "wrong").await,
        429
    );
    // Another client behind the same proxy is not locked out.
    assert_eq!(
        login_forwarded(&app, "10.0.0.2", &email, "correct horse").await,
        200
    );
}
