//! Process plumbing shared by the `gateway` and `worker` binaries: shutdown on
//! signals, log set-up (text or one JSON object per line) and the one Prometheus
//! recorder with build and process metrics.

pub mod logs;
pub mod metrics;
pub mod signals;

pub use logs::init_logs;
pub use metrics::{describe, Recorder};
pub use signals::cancel_on_signals;
