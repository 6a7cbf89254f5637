//! A `gateway` binary as a child process: for the tests that need gateways in
//! separate processes, each with its own NATS connection, hub and runtime.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Api;

const READY_WITHIN: Duration = Duration::from_secs(20);

/// Killed when dropped, so a failing test leaves no server behind; its HTTP calls are
/// [`Api`]'s.
pub struct GatewayProcess {
    pub api: Api,
    child: Child,
    /// What it logged, for a failure message.
    log: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl GatewayProcess {
    /// Starts one on `env` (its `BIND_ADDR` replaced by a free loopback port) and waits until
    /// `/health` answers 200: bus, database and limiter all reachable.
    pub async fn start(env: &HashMap<String, String>) -> GatewayProcess {
        // its own folder, so no `.env` or `inside.toml` of the checkout leaks in
        let dir = tempfile::tempdir().expect("tempdir");
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let mut child = Command::new(env!("CARGO_BIN_EXE_gateway"))
            .current_dir(dir.path())
            .envs(env)
            .env("BIND_ADDR", addr.to_string())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the gateway binary starts");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            // keeps reading until the process ends, so it never blocks on a full pipe
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        });
        let gateway = GatewayProcess {
            api: Api::new(addr),
            child,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            let health = gateway.http.get(gateway.url("/health")).send().await;
            if matches!(&health, Ok(res) if res.status() == 200) {
                return gateway;
            }
            assert!(
                Instant::now() < deadline,
                "gateway process not healthy within {READY_WITHIN:?}:\n{}",
                gateway.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: the process ends without a word to anyone (no leave announced, no drain).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .join("\n")
    }
}

impl std::ops::Deref for GatewayProcess {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
