//! `spawn_app()`: a real gateway on port 0 with its own fresh database
//! (SQLite file or PostgreSQL database), driven over HTTP.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod asyncapi;
pub mod audio;
pub mod history;
pub mod process;
pub mod worker;

use inside_testkit::scratch;
pub mod ws;

use std::collections::HashMap;
use std::net::SocketAddr;

use inside_gateway::AppState;
use inside_server::Server;
use inside_settings::Settings;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use scratch::Leftovers;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// A gateway as the tests reach it over HTTP, wherever it runs (this process or a child).
pub struct Api {
    pub addr: SocketAddr,
    pub base: String,
    pub http: reqwest::Client,
}

/// A gateway served in this process; its HTTP calls are [`Api`]'s.
pub struct TestApp {
    pub api: Api,
    pub shutdown: CancellationToken,
    pub handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    pub env: HashMap<String, String>,
    pub state: AppState,
    _scratch: std::sync::Arc<Scratch>,
}

/// A test's own folder, database and stream, shared by the gateways it starts on them and
/// removed after the last one is gone.
pub struct Scratch {
    _dir: tempfile::TempDir,
    _leftovers: Leftovers,
}

/// A fresh, empty database URL for `db`, and what removes it.
pub async fn fresh_database(db: Db, dir: &std::path::Path) -> (String, Leftovers) {
    match db {
        Db::Sqlite => (
            format!("sqlite://{}/inside.db", dir.display()),
            Leftovers::default(),
        ),
        Db::Postgres => scratch::fresh_postgres("inside_test").await,
    }
}

pub async fn spawn_app(db: Db) -> TestApp {
    spawn_app_with(db, &[]).await
}

pub async fn spawn_app_with(db: Db, extra: &[(&str, &str)]) -> TestApp {
    // `RUST_LOG=debug cargo test ... -- --nocapture` shows the servers' logs under the test.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let dir = tempfile::tempdir().expect("tempdir");
    let (url, mut leftovers) = fresh_database(db, dir.path()).await;
    let mut env: HashMap<String, String> = HashMap::from([
        ("DATABASE_URL".into(), url),
        ("DATA_DIR".into(), dir.path().display().to_string()),
        ("BIND_ADDR".into(), "127.0.0.1:0".into()),
        (
            "SECRET_KEY".into(),
            "test-secret-key-0123456789abcdef0123".into(),
        ),
        // Cost 4 keeps the suite fast; cost 12 is the default and has its own test.
        ("BCRYPT_COST".into(), "4".into()),
        (
            "NATS_SUBJECT_PREFIX".into(),
            format!("t{}", uuid::Uuid::new_v4().simple()),
        ),
        ("DATABASE_MAX_CONNECTIONS".into(), "5".into()),
        ("REPORT_JOB_POLL_MS".into(), "50".into()),
        // Every test's users sign up from 127.0.0.1; the signup limit has its own tests.
        ("SIGNUP_MAX_PER_ADDRESS".into(), "100000".into()),
    ]);
    for (k, v) in extra {
        env.insert(k.to_string(), v.to_string());
    }
    if let Some(nats) = env.get("NATS_URL") {
        let prefix = inside_bus::Subjects::new(env["NATS_SUBJECT_PREFIX"].clone());
        leftovers = leftovers
            .with_stream(nats, prefix.jobs_stream())
            .with_stream(nats, prefix.events_stream());
    }
    let scratch = Scratch {
        _dir: dir,
        _leftovers: leftovers,
    };
    start(env, std::sync::Arc::new(scratch)).await
}

/// Starts a gateway on `env` (used again to restart on the same database).
pub async fn start(env: HashMap<String, String>, scratch: std::sync::Arc<Scratch>) -> TestApp {
    let settings = Settings::from_map(&env).expect("test settings");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = Server::build(settings).await.expect("build state");
    let state = server.state.clone();
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(server.serve(listener, shutdown.clone()));
    TestApp {
        api: Api::new(addr),
        shutdown,
        handle: Some(handle),
        env,
        state,
        _scratch: scratch,
    }
}

impl TestApp {
    /// Another gateway on the same database, settings and subject prefix.
    pub async fn another_gateway(&self) -> TestApp {
        start(self.env.clone(), self._scratch.clone()).await
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) -> (HashMap<String, String>, std::sync::Arc<Scratch>) {
        self.shutdown.cancel();
        if let Some(h) = self.handle.take() {
            h.await.expect("join").expect("serve");
        }
        (self.env.clone(), self._scratch.clone())
    }
}

impl std::ops::Deref for TestApp {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Api {
    pub fn new(addr: SocketAddr) -> Api {
        Api {
            addr,
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        let mut req = self.http.post(self.url(path)).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        send(req).await
    }

    pub async fn put(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        let mut req = self.http.put(self.url(path)).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        send(req).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self.http.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        send(req).await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self.http.delete(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        send(req).await
    }

    /// Signs up `email` and returns the token pair.
    pub async fn signup(&self, email: &str) -> Value {
        let (status, body) = self
            .post("/v1/auth/signup", None, json!({"email": email, "password": "correct horse", "name": email.split('@').next().unwrap_or("x")}))
            .await;
        assert_eq!(status, 201, "{body}");
        body
    }

    /// Sets `who`'s consent in relationship `rid` to `status`; the relationship back.
    pub async fn set_consent(&self, rid: &str, who: &Value, status: &str) -> Value {
        self.set_member_status(rid, "consent", who, status).await
    }

    /// Sets `who`'s research use in relationship `rid` to `status`; the relationship back.
    pub async fn set_research(&self, rid: &str, who: &Value, status: &str) -> Value {
        self.set_member_status(rid, "research", who, status).await
    }

    /// `PUT /v1/relationships/{rid}/{what}/{uid}` by `who`, expecting 200.
    async fn set_member_status(&self, rid: &str, what: &str, who: &Value, status: &str) -> Value {
        let (s, rel) = self
            .put(
                &format!("/v1/relationships/{rid}/{what}/{}", uid(who)),
                Some(token(who)),
                json!({ "status": status }),
            )
            .await;
        assert_eq!(s, 200, "{rel}");
        rel
    }

    /// Two signed-up users in a relationship where both granted consent: (a, b, rid).
    pub async fn couple(&self) -> (Value, Value, String) {
        let a = self.signup(&unique_email("a")).await;
        let b = self.signup(&unique_email("b")).await;
        let (status, rel) = self
            .post(
                "/v1/relationships",
                Some(token(&a)),
                json!({"partner_email": b["user"]["email"], "kind": "romantic"}),
            )
            .await;
        assert_eq!(status, 201, "{rel}");
        let rid = rel["id"].as_str().unwrap().to_string();
        for u in [&a, &b] {
            self.set_consent(&rid, u, "granted").await;
        }
        (a, b, rid)
    }

    /// A session of `rid` started by `pair`: its id.
    pub async fn start_session(&self, pair: &Value, rid: &str) -> String {
        let (s, session) = self
            .post(
                "/v1/sessions",
                Some(token(pair)),
                json!({"relationship_id": rid}),
            )
            .await;
        assert_eq!(s, 201, "{session}");
        session["id"].as_str().unwrap().to_string()
    }

    /// `POST /v1/sessions/{sid}/finalize`.
    pub async fn finalize(&self, sid: impl std::fmt::Display, token: Option<&str>) -> (u16, Value) {
        self.post(&format!("/v1/sessions/{sid}/finalize"), token, json!({}))
            .await
    }

    /// The session's report once the job has written it (202 pending until then).
    pub async fn wait_report(&self, sid: &str, t: &str) -> Value {
        for _ in 0..200 {
            let (s, body) = self
                .get(&format!("/v1/sessions/{sid}/report"), Some(t))
                .await;
            if s == 200 {
                return body;
            }
            assert_eq!((s, body["status"].as_str()), (202, Some("pending")));
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("report of {sid} never written");
    }

    /// `PUT /v1/users/me/voiceprint` with a WAV body.
    pub async fn put_voiceprint(&self, pair: &Value, wav: Vec<u8>) -> reqwest::Response {
        self.http
            .put(self.url("/v1/users/me/voiceprint"))
            .bearer_auth(token(pair))
            .header("content-type", "audio/wav")
            .body(wav)
            .send()
            .await
            .unwrap()
    }
}

pub async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    let text = res.text().await.expect("body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, body)
}

/// The user id of a [`Api::signup`] answer.
pub fn uid(pair: &Value) -> &str {
    pair["user"]["id"].as_str().expect("user.id")
}

pub fn token(pair: &Value) -> &str {
    pair["access_token"].as_str().expect("access_token")
}

pub fn unique_email(tag: &str) -> String {
    format!("{tag}-{}@example.com", uuid::Uuid::new_v4().simple())
}

/// Asserts the API's error shape and code.
pub fn assert_error(body: &Value, code: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
}

/// Runs each listed async test body against SQLite and PostgreSQL.
#[macro_export]
macro_rules! both_databases {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Db::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Db::Postgres).await
                }
            )*
        }
    };
}
