//! Warms the session cache as members join: a gateway announces every join on the session's
//! state subject, and a worker that reads the session then, rather than at its first frame,
//! keeps the database read off that frame's path to a nudge.
//!
//! Every worker listens (not a queue group): any of them may take the session's frames. The
//! message is untrusted and only its subject is used; an unknown session id costs one cached
//! query, as it would on the frame path.

use futures::StreamExt;
use inside_bus::{last_uuid, Subscription};
use inside_store::SessionDirectory;
use tokio_util::sync::CancellationToken;

pub async fn run(mut sub: Subscription, directory: SessionDirectory, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            msg = sub.next() => match msg {
                Some(msg) => {
                    if let Some(sid) = last_uuid(&msg.subject) {
                        directory.prefetch(sid);
                    }
                }
                None => return,
            },
            _ = shutdown.cancelled() => return,
        }
    }
}
