//! Signup, login, refresh-token rotation and reuse, logout, bad tokens.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::json;

both_databases!(
    signup_returns_a_token_pair_and_normalises_email,
    signup_rejects_bad_input_with_the_right_status,
    login_accepts_the_right_password_only,
    refresh_token_rotates_and_reuse_revokes_family,
    logout_revokes_the_family,
    protected_routes_refuse_missing_or_bad_tokens,
    invited_partner_is_attached_on_signup,
);

async fn signup_returns_a_token_pair_and_normalises_email(db: Db) {
    let app = spawn_app(db).await;
    let email = unique_email("Mixed.Case");
    let (s, pair) = app.post("/v1/auth/signup", None, json!({"email": format!("  {}  ", email.to_uppercase()), "password": "12345678", "name": "Ada"})).await;
    assert_eq!(s, 201, "{pair}");
    assert_eq!(pair["token_type"], "bearer");
    assert_eq!(pair["expires_in"], 900);
    assert_eq!(pair["user"]["email"], email.to_lowercase());
    assert!(pair["refresh_token"].as_str().unwrap().len() >= 32);
    let (s, me) = app.get("/v1/users/me", Some(token(&pair))).await;
    assert_eq!(s, 200);
    assert_eq!(me, pair["user"]);
    let (s, body) = app
        .post(
            "/v1/auth/signup",
            None,
            json!({"email": email, "password": "12345678", "name": "Bob"}),
        )
        .await;
    assert_eq!(s, 409);
    assert_error(&body, "email_taken");
}

async fn signup_rejects_bad_input_with_the_right_status(db: Db) {
    let app = spawn_app(db).await;
    let email = unique_email("v");
    let cases = [
        (
            json!({"email": "not-an-email", "password": "12345678", "name": "A"}),
            422,
        ),
        (
            json!({"email": email, "password": "short", "name": "A"}),
            422,
        ),
        (
            json!({"email": email, "password": "x".repeat(73), "name": "A"}),
            422,
        ),
        (
            json!({"email": email, "password": "é".repeat(37), "name": "A"}),
            422,
        ), // 74 bytes
        (
            json!({"email": email, "password": "12345678", "name": "  "}),
            422,
        ),
        (json!({"email": email, "password": "12345678"}), 422),
        (
            json!({"email": email, "password": 12345678, "name": "A"}),
            422,
        ),
    ];
    for (body, want) in cases {
        let (s, res) = app.post("/v1/auth/signup", None, body.clone()).await;
        assert_eq!(s, want, "{body} -> {res}");
        assert!(res["error"]["code"].is_string(), "{res}");
    }
    // exactly 72 bytes is allowed, and logs in with all 72
    let long = "p".repeat(72);
    let (s, _) = app
        .post(
            "/v1/auth/signup",
            None,
            json!({"email": email, "password": long, "name": "A"}),
        )
        .await;
    assert_eq!(s, 201);
    let (s, _) = app
        .post(
            "/v1/auth/login",
            None,
            json!({"email": email, "password": "p".repeat(71) + "q"}),
        )
        .await;
    assert_eq!(s, 401, "the 72nd byte counts");
    // malformed JSON and wrong content type
    let res = app
        .http
        .post(app.url("/v1/auth/signup"))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_error(&body, "malformed_json");
    let res = app
        .http
        .post(app.url("/v1/auth/signup"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 415);
}

async fn login_accepts_the_right_password_only(db: Db) {
    let app = spawn_app(db).await;
    let email = unique_email("l");
    app.signup(&email).await;
    let (s, pair) = app
        .post(
            "/v1/auth/login",
            None,
            json!({"email": email.to_uppercase(), "password": "correct horse"}),
        )
        .await;
    assert_eq!(s, 200, "{pair}");
    assert_eq!(pair["user"]["email"], email);
    let (s, wrong) = app
        .post(
            "/v1/auth/login",
            None,
            json!({"email": email, "password": "wrong horse"}),
        )
        .await;
    assert_eq!(s, 401);
    let (s, unknown) = app
        .post(
            "/v1/auth/login",
            None,
            json!({"email": unique_email("nobody"), "password": "correct horse"}),
        )
        .await;
    assert_eq!(s, 401);
    assert_eq!(
        wrong["error"], unknown["error"],
        "same answer for unknown email and wrong password"
    );
}

async fn refresh_token_rotates_and_reuse_revokes_family(db: Db) {
    let app = spawn_app(db).await;
    let pair = app.signup(&unique_email("r")).await;
    let first = pair["refresh_token"].as_str().unwrap();
    let (s, second) = app
        .post("/v1/auth/refresh", None, json!({"refresh_token": first}))
        .await;
    assert_eq!(s, 200, "{second}");
    let second_token = second["refresh_token"].as_str().unwrap();
    assert_ne!(second_token, first);
    let (s, me) = app.get("/v1/users/me", Some(token(&second))).await;
    assert_eq!((s, &me["id"]), (200, &pair["user"]["id"]));
    let (s, third) = app
        .post(
            "/v1/auth/refresh",
            None,
            json!({"refresh_token": second_token}),
        )
        .await;
    assert_eq!(s, 200);
    // Presenting the rotated first token again: reuse, the family dies…
    let (s, body) = app
        .post("/v1/auth/refresh", None, json!({"refresh_token": first}))
        .await;
    assert_eq!(s, 401);
    assert_error(&body, "token_reused");
    // …including the newest descendant.
    let (s, _) = app
        .post(
            "/v1/auth/refresh",
            None,
            json!({"refresh_token": third["refresh_token"]}),
        )
        .await;
    assert_eq!(s, 401);
    let (s, body) = app
        .post(
            "/v1/auth/refresh",
            None,
            json!({"refresh_token": "made-up"}),
        )
        .await;
    assert_eq!(s, 401);
    assert_error(&body, "invalid_token");
}

async fn logout_revokes_the_family(db: Db) {
    let app = spawn_app(db).await;
    let pair = app.signup(&unique_email("o")).await;
    let (s, body) = app
        .post(
            "/v1/auth/logout",
            None,
            json!({"refresh_token": pair["refresh_token"]}),
        )
        .await;
    assert_eq!((s, body), (204, serde_json::Value::Null));
    let (s, _) = app
        .post(
            "/v1/auth/refresh",
            None,
            json!({"refresh_token": pair["refresh_token"]}),
        )
        .await;
    assert_eq!(s, 401);
}

async fn protected_routes_refuse_missing_or_bad_tokens(db: Db) {
    let app = spawn_app(db).await;
    let pair = app.signup(&unique_email("p")).await;
    let good = token(&pair);
    let mut tampered = good.to_string();
    tampered.replace_range(good.len() - 3.., "abc");
    for t in [None, Some("garbage"), Some(tampered.as_str())] {
        let (s, body) = app.get("/v1/users/me", t).await;
        assert_eq!(s, 401, "{t:?}");
        assert!(body["error"]["code"].is_string());
    }
    let res = app
        .http
        .get(app.url("/v1/users/me"))
        .header("authorization", format!("Basic {good}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

async fn invited_partner_is_attached_on_signup(db: Db) {
    let app = spawn_app(db).await;
    let a = app.signup(&unique_email("inviter")).await;
    let partner = unique_email("invitee");
    let (s, rel) = app
        .post(
            "/v1/relationships",
            Some(token(&a)),
            json!({"partner_email": partner, "kind": "family"}),
        )
        .await;
    assert_eq!(s, 201);
    assert_eq!(rel["members"][1]["user_id"], serde_json::Value::Null);
    assert_eq!(rel["members"][1]["consent"], "pending");
    let b = app.signup(&partner).await;
    let (s, list) = app.get("/v1/relationships", Some(token(&b))).await;
    assert_eq!(s, 200);
    assert_eq!(list[0]["id"], rel["id"]);
    assert_eq!(list[0]["members"][1]["user_id"], b["user"]["id"]);
    assert_eq!(list[0]["members"][1]["name"], b["user"]["name"]);
}
