//! The process's one Prometheus recorder: latency buckets (histograms, so they aggregate
//! across processes), `inside_build_info`, and the `process_*` series of `metrics-process`,
//! refreshed at every scrape.

use std::sync::{Arc, OnceLock};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Buckets of request and job latencies, in seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
/// Buckets of the frame→nudge latency: 100 µs to 1 s, finer where the realtime path lives.
const FRAME_TO_NUDGE_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];
/// The histogram every gateway observes when it hands a nudge to a socket.
pub const FRAME_TO_NUDGE: &str = "inside_frame_to_nudge_seconds";

/// A handle on the installed recorder; clones share it.
#[derive(Clone)]
pub struct Recorder {
    handle: PrometheusHandle,
    process: Arc<metrics_process::Collector>,
}

impl Recorder {
    /// Installs the recorder the first time (tests build many servers in one process; they
    /// share it) and sets `inside_build_info{version}` to 1.
    pub fn install(version: &str) -> Self {
        static RECORDER: OnceLock<Recorder> = OnceLock::new();
        let recorder = RECORDER
            .get_or_init(|| {
                let recorder = PrometheusBuilder::new()
                    .set_buckets(LATENCY_BUCKETS)
                    .and_then(|b| {
                        b.set_buckets_for_metric(
                            Matcher::Full(FRAME_TO_NUDGE.into()),
                            FRAME_TO_NUDGE_BUCKETS,
                        )
                    })
                    .map(|b| b.build_recorder())
                    // only an empty bucket list fails, and these are constants
                    .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
                let handle = recorder.handle();
                let _ = metrics::set_global_recorder(recorder);
                let process = metrics_process::Collector::default();
                process.describe();
                metrics::describe_gauge!(
                    "inside_build_info",
                    "Always 1; the `version` label says which build runs"
                );
                Recorder {
                    handle,
                    process: Arc::new(process),
                }
            })
            .clone();
        metrics::gauge!("inside_build_info", "version" => version.to_string()).set(1.0);
        recorder
    }

    /// The Prometheus text of every series, with the process series read just now.
    pub fn render(&self) -> String {
        self.process.collect();
        self.handle.render()
    }
}

/// Describes (`# HELP`) every series named in `series`: `(name, help)` pairs, so a crate
/// keeps its list next to the code that emits them.
pub fn describe(
    counters: &[(&'static str, &'static str)],
    gauges: &[(&'static str, &'static str)],
    histograms: &[(&'static str, &'static str)],
) {
    for (name, help) in counters {
        metrics::describe_counter!(*name, *help);
    }
    for (name, help) in gauges {
        metrics::describe_gauge!(*name, *help);
    }
    for (name, help) in histograms {
        metrics::describe_histogram!(*name, metrics::Unit::Seconds, *help);
    }
}
