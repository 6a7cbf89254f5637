//! Request bodies too big for one NATS message: a 60 s enrolment recording
//! (about 2 MB of WAV) is over nats-server's default `max_payload` of 1 MB.
//! Such a body is put in a JetStream object store bucket (chunked by the
//! client, kept at most [`UPLOAD_TTL`]) and the request names it in the
//! `Inside-Upload` header instead of carrying it; the responder takes it out
//! and deletes it.

use std::time::Duration;

use async_nats::jetstream::{self, object_store};
use bytes::Bytes;
use tokio::io::AsyncReadExt;

use crate::{BusError, Subjects};

/// The header naming an uploaded body.
pub const UPLOAD_HEADER: &str = "Inside-Upload";

/// How long an upload nobody took stays in the bucket.
pub const UPLOAD_TTL: Duration = Duration::from_secs(300);

/// Headroom under `max_payload` for the headers of the request itself.
const HEADER_ROOM: usize = 4096;

/// Whether `len` bytes must travel as an upload on this connection.
pub fn needs_upload(client: &async_nats::Client, len: usize) -> bool {
    len + HEADER_ROOM > client.server_info().max_payload
}

async fn bucket(
    client: &async_nats::Client,
    subjects: &Subjects,
) -> Result<object_store::ObjectStore, BusError> {
    let js = jetstream::new(client.clone());
    let name = subjects.uploads_bucket();
    match js.get_object_store(&name).await {
        Ok(store) => Ok(store),
        Err(_) => js
            .create_object_store(object_store::Config {
                bucket: name,
                max_age: UPLOAD_TTL,
                ..Default::default()
            })
            .await
            .map_err(|e| BusError::JetStream(format!("creating the uploads bucket: {e}"))),
    }
}

/// Stores `body` and returns the name to put in [`UPLOAD_HEADER`].
pub async fn put(
    client: &async_nats::Client,
    subjects: &Subjects,
    body: &[u8],
) -> Result<String, BusError> {
    let name = uuid::Uuid::new_v4().to_string();
    let mut reader = body;
    bucket(client, subjects)
        .await?
        .put(name.as_str(), &mut reader)
        .await
        .map_err(|e| BusError::JetStream(format!("storing an upload: {e}")))?;
    Ok(name)
}

/// Reads the upload `name` and deletes it.
pub async fn take(
    client: &async_nats::Client,
    subjects: &Subjects,
    name: &str,
) -> Result<Bytes, BusError> {
    let store = bucket(client, subjects).await?;
    let mut object = store
        .get(name)
        .await
        .map_err(|e| BusError::JetStream(format!("fetching upload {name}: {e}")))?;
    let mut body = Vec::new();
    object
        .read_to_end(&mut body)
        .await
        .map_err(|e| BusError::JetStream(format!("reading upload {name}: {e}")))?;
    if let Err(e) = store.delete(name).await {
        // the bucket's max_age removes it anyway
        tracing::debug!(error = %e, "deleting upload {name}");
    }
    Ok(body.into())
}
