//! The worker's metrics: the `# HELP` of every series it emits, its series set to zero at start
//! (a dashboard shows 0, not "no data", before the first job or frame), and the JetStream
//! backlog of report jobs (`inside_jobs_pending`).

use std::time::Duration;

use async_nats::jetstream::stream::Stream;
use tokio_util::sync::CancellationToken;

/// How often the report job backlog is read.
const PENDING_POLL: Duration = Duration::from_secs(5);

const COUNTERS: &[(&str, &str)] = &[
    (
        "inside_frames_received_total",
        "Feature frames taken from the bus",
    ),
    (
        "inside_frames_invalid_total",
        "Feature frames refused (forged, malformed, not a consenting member)",
    ),
    (
        "inside_frames_processed_total",
        "Feature frames run through the rules",
    ),
    ("inside_nudges_total", "Nudges published, by type"),
    (
        "inside_nudges_limited_total",
        "Nudges held back by the per-user rate limit",
    ),
    (
        "inside_audio_segments_received_total",
        "Live audio segments taken from the bus",
    ),
    (
        "inside_audio_segments_invalid_total",
        "Live audio segments refused",
    ),
    (
        "inside_audio_segments_silent_total",
        "Live audio segments with no speech",
    ),
    (
        "inside_audio_forwarded_total",
        "Live audio segments handed to the worker owning their session (NATS with Redis)",
    ),
    (
        "inside_audio_owner_takeovers_total",
        "Sessions' live audio taken over from a worker that did not answer a forwarded segment",
    ),
    (
        "inside_speakers_total",
        "Speaker events published, by whether a member was recognised",
    ),
    (
        "inside_enrolments_total",
        "Voiceprint enrolment requests answered, by outcome",
    ),
    (
        "inside_events_recorded_total",
        "Session events stored for reports",
    ),
    (
        "inside_events_dropped_total",
        "Session events the store refused (their session is gone); the rest of the batch is kept",
    ),
    (
        "inside_events_lost_total",
        "Session events that could not be stored",
    ),
    (
        "inside_jobs_total",
        "Report jobs finished, by outcome (done, failed, refused)",
    ),
    ("inside_reports_written_total", "Reports stored"),
    (
        "inside_reports_incomplete_total",
        "Reports written before everything published was recorded",
    ),
    (
        "inside_reports_failed_total",
        "Sessions whose report job was given up",
    ),
];

const GAUGES: &[(&str, &str)] = &[(
    "inside_jobs_pending",
    "Report jobs waiting in JetStream (INSIDE_JOBS): not yet delivered plus delivered and not acked",
)];

const HISTOGRAMS: &[(&str, &str)] = &[(
    "inside_speaker_latency_seconds",
    "From a live audio segment being cut to its speaker event being published",
)];

/// `# HELP` for the worker's series and the bus's under it.
pub fn describe_metrics() {
    inside_bus::describe_metrics();
    inside_process::describe(COUNTERS, GAUGES, HISTOGRAMS);
}

/// Sets the worker's unlabelled series and each known label value to zero, so every series
/// exists from the first scrape.
pub fn register_at_zero() {
    for (name, _) in COUNTERS {
        match *name {
            "inside_jobs_total" => {
                for outcome in ["done", "failed", "refused"] {
                    metrics::counter!(*name, "outcome" => outcome).absolute(0);
                }
            }
            "inside_enrolments_total" => {
                for outcome in ["ok", "refused"] {
                    metrics::counter!(*name, "outcome" => outcome).absolute(0);
                }
            }
            "inside_speakers_total" => {
                for attributed in ["yes", "no"] {
                    metrics::counter!(*name, "attributed" => attributed).absolute(0);
                }
            }
            "inside_nudges_total" => {
                for kind in inside_schemas::NudgeType::ALL {
                    metrics::counter!(*name, "type" => kind.as_str()).absolute(0);
                }
            }
            _ => metrics::counter!(*name).absolute(0),
        }
    }
    metrics::gauge!("inside_jobs_pending").set(0.0);
}

/// Reads the backlog of `consumer` on `stream` into `inside_jobs_pending` until `shutdown`.
pub async fn poll_jobs_pending(
    stream: Stream,
    consumer: &'static str,
    shutdown: CancellationToken,
) {
    let mut every = tokio::time::interval(PENDING_POLL);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        match stream.consumer_info(consumer).await {
            Ok(info) => {
                let pending = info.num_pending as f64 + info.num_ack_pending as f64;
                metrics::gauge!("inside_jobs_pending").set(pending);
            }
            Err(e) => tracing::debug!(error = %e, "reading the report job backlog failed"),
        }
    }
}
