//! A nats-server of a test's own: the shipped configuration (`deploy/nats/nats-server.conf`,
//! identities and subject permissions) or one the test writes, on a free loopback port with a
//! temporary JetStream directory, killed when dropped, and restarted on demand with the same
//! port, configuration and store (what an operator's restart does). A missing `nats-server`
//! binary fails the test: the secured bus is not something to skip silently.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

const READY_WITHIN: Duration = Duration::from_secs(15);

/// A user of the shipped configuration and the password the tests give it.
#[derive(Debug, Clone, Copy)]
pub struct Identity {
    pub user: &'static str,
    pub password: &'static str,
    /// The environment variable the shipped configuration reads the password from.
    env: &'static str,
}

pub const GATEWAY: Identity = Identity {
    user: "gateway",
    password: "gateway-test-password",
    env: "INSIDE_NATS_GATEWAY_PASSWORD",
};
pub const WORKER: Identity = Identity {
    user: "worker",
    password: "worker-test-password",
    env: "INSIDE_NATS_WORKER_PASSWORD",
};
pub const RESEARCHER: Identity = Identity {
    user: "researcher",
    password: "researcher-test-password",
    env: "INSIDE_NATS_RESEARCHER_PASSWORD",
};

/// The configuration the repository ships.
pub fn shipped_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nats/nats-server.conf")
}

pub struct NatsServer {
    child: Child,
    pub port: u16,
    log: Arc<Mutex<Vec<String>>>,
    config: PathBuf,
    env: Vec<(&'static str, String)>,
    /// The configuration and JetStream store, removed with the server.
    dir: tempfile::TempDir,
}

impl NatsServer {
    /// The shipped configuration, its passwords those of [`GATEWAY`], [`WORKER`] and
    /// [`RESEARCHER`].
    pub fn shipped() -> NatsServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = dir.path().join("jetstream");
        let mut env: Vec<(&'static str, String)> = [GATEWAY, WORKER, RESEARCHER]
            .iter()
            .map(|i| (i.env, i.password.to_string()))
            .collect();
        env.push(("INSIDE_NATS_STORE_DIR", store.display().to_string()));
        Self::start(dir, shipped_config(), env)
    }

    /// A configuration of the test's own, written to a file in the server's directory.
    pub fn with_config(config: &str) -> NatsServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nats-server.conf");
        std::fs::write(&path, config).expect("writing the nats-server config");
        Self::start(dir, path, Vec::new())
    }

    /// No identities, JetStream on with its store in the server's directory (kept across
    /// [`NatsServer::restart`]).
    pub fn with_jetstream() -> NatsServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = dir.path().join("jetstream");
        let path = dir.path().join("nats-server.conf");
        std::fs::write(
            &path,
            format!("jetstream {{ store_dir: \"{}\" }}\n", store.display()),
        )
        .expect("writing the nats-server config");
        Self::start(dir, path, Vec::new())
    }

    fn start(
        dir: tempfile::TempDir,
        config: PathBuf,
        env: Vec<(&'static str, String)>,
    ) -> NatsServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let child = spawn(dir.path(), &config, &env, port, &log);
        NatsServer {
            child,
            port,
            log,
            config,
            env,
            dir,
        }
    }

    /// Stops the server (SIGKILL: nothing flushed beyond what it already wrote) and starts it
    /// again on the same port, configuration and JetStream store; clients reconnect to it.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(
            self.dir.path(),
            &self.config,
            &self.env,
            self.port,
            &self.log,
        );
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The environment of a gateway or worker process connecting as `who`.
    pub fn env(&self, who: Identity) -> Vec<(&'static str, String)> {
        vec![
            ("NATS_URL", self.url()),
            ("NATS_USER", who.user.to_string()),
            ("NATS_PASSWORD", who.password.to_string()),
        ]
    }

    /// A client connected as `who`.
    pub async fn connect(&self, who: Identity) -> async_nats::Client {
        async_nats::ConnectOptions::with_user_and_password(
            who.user.to_string(),
            who.password.to_string(),
        )
        .connect(self.url())
        .await
        .unwrap_or_else(|e| panic!("connecting as {}: {e}", who.user))
    }

    pub fn log(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .join("\n")
    }

    /// The refusals the server logged so far: nats-server 2.9 logs `Publish Violation`,
    /// `Subscription Violation` and `Authorization Violation` at error level.
    pub fn violations(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|l| l.contains(" Violation"))
            .cloned()
            .collect()
    }
}

/// Starts nats-server and waits until it says it is ready; its log lines go to `log`.
fn spawn(
    dir: &Path,
    config: &Path,
    env: &[(&'static str, String)],
    port: u16,
    log: &Arc<Mutex<Vec<String>>>,
) -> Child {
    let spawned = Command::new("nats-server")
        .current_dir(dir)
        .arg("-c")
        .arg(config)
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => panic!(
            "cannot start nats-server ({e}): the secured-bus tests run their own from \
             deploy/nats/nats-server.conf; install it (scripts/services does) and put it on PATH"
        ),
    };
    let (ready_tx, ready_rx) = mpsc::channel();
    let stderr = child.stderr.take().expect("stderr");
    let sink = log.clone();
    std::thread::spawn(move || {
        // keeps reading until the server ends, so it never blocks on a full pipe
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("Server is ready") {
                let _ = ready_tx.send(());
            }
            sink.lock().unwrap_or_else(|p| p.into_inner()).push(line);
        }
    });
    if ready_rx.recv_timeout(READY_WITHIN).is_err() {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "nats-server not ready within {READY_WITHIN:?}:\n{}",
            log.lock().unwrap_or_else(|p| p.into_inner()).join("\n")
        );
    }
    child
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
