//! The Inside worker: turns recorded sessions into reports, and (with NATS)
//! runs the analysis pipeline in the queue group `workers`. The embedded
//! default runs the same code inside the gateway process.

pub mod barrier;
pub mod embed;
pub mod error;
pub mod ops;
pub mod pipeline;
pub mod reports;
pub mod tap;
pub mod telemetry;

pub use error::WorkerError;
pub use reports::{write_report, ReportConfig, ReportJobs};
