//! The capability probe of a distributed gateway: a worker with a speaker model answers
//! requests on `inside.v1.capabilities` (queue group `workers`, so one of them does) with
//! `{"speaker": true}`. A gateway asks before accepting `client.audio_start`; when nobody
//! answers, no worker would attribute the audio and the phone is told `audio_unavailable`
//! instead of streaming into nothing.

use futures::StreamExt;
use inside_bus::{Bus, Subscription};
use inside_schemas::Capabilities;
use tokio_util::sync::CancellationToken;

/// Answers capability probes until `shutdown`. Stops answering at once then: a draining
/// worker takes no new audio stream.
pub async fn run_capabilities(bus: Bus, mut sub: Subscription, shutdown: CancellationToken) {
    let reply = Capabilities { speaker: true };
    loop {
        let msg = tokio::select! {
            m = sub.next() => m,
            _ = shutdown.cancelled() => return,
        };
        let Some(msg) = msg else { return };
        let Some(reply_to) = msg.reply else {
            tracing::debug!("capability probe without a reply subject ignored");
            continue;
        };
        if let Err(e) = bus.publish_json(reply_to, &reply).await {
            tracing::warn!(error = %e, "answering a capability probe failed");
        }
    }
}
