//! What a test creates on the shared services (its own PostgreSQL database, the JetStream
//! streams of its subject prefix), removed again when the test is done with it: a machine that
//! runs the suite every day would otherwise keep some forty databases (about 8 MB each) and
//! streams per run. Shared by the gateway's and the workers' tests, so both clean up alike.

use std::time::Duration;

use async_nats::jetstream::context::DeleteStreamErrorKind;
use async_nats::jetstream::ErrorCode;

const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Long enough for a loaded CI machine, short enough that a dead service cannot hang a test.
const CLEANUP_WITHIN: Duration = Duration::from_secs(15);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Owns what a test created on the shared services; dropping it removes them.
#[derive(Default)]
pub struct Leftovers {
    database: Option<String>,
    /// (NATS URL, stream name)
    streams: Vec<(String, String)>,
}

impl Leftovers {
    /// Also delete `stream` on the NATS server at `url` (it need not exist).
    pub fn with_stream(mut self, url: &str, stream: String) -> Self {
        self.streams.push((url.to_string(), stream));
        self
    }
}

/// A new, empty database named `{prefix}_{uuid}` on the local PostgreSQL: its URL, and what
/// drops it.
pub async fn fresh_postgres(prefix: &str) -> (String, Leftovers) {
    let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    let admin = sqlx::PgPool::connect(PG_ADMIN)
        .await
        .expect("PostgreSQL must run on 127.0.0.1:5432 (scripts/services starts it)");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .expect("create database");
    admin.close().await;
    let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
    let leftovers = Leftovers {
        database: Some(name),
        streams: Vec::new(),
    };
    (url, leftovers)
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        let database = self.database.take();
        let streams = std::mem::take(&mut self.streams);
        if database.is_none() && streams.is_empty() {
            return;
        }
        // A drop may run on a runtime's thread, where blocking on another runtime panics.
        let cleanup = std::thread::spawn(move || -> Result<(), BoxError> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                tokio::time::timeout(CLEANUP_WITHIN, remove(database, streams)).await
            })?
        });
        match cleanup.join() {
            Ok(Ok(())) => {}
            // not a failure of the behaviour under test, but worth a line in its output
            Ok(Err(e)) => eprintln!("cleaning up after the test: {e}"),
            Err(_) => eprintln!("cleaning up after the test: the cleanup thread panicked"),
        }
    }
}

async fn remove(database: Option<String>, streams: Vec<(String, String)>) -> Result<(), BoxError> {
    if let Some(name) = database {
        let admin = sqlx::PgPool::connect(PG_ADMIN).await?;
        // FORCE: a server of the test may still hold pooled connections
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&admin)
            .await?;
        admin.close().await;
    }
    for (url, name) in streams {
        let nc = async_nats::connect(url).await?;
        match async_nats::jetstream::new(nc).delete_stream(&name).await {
            Ok(_) => {}
            // a test whose servers never reached JetStream made no stream
            Err(e) if matches!(e.kind(), DeleteStreamErrorKind::JetStream(js) if js.error_code() == ErrorCode::STREAM_NOT_FOUND) =>
                {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
