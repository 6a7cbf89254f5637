//! Pure logic of Inside: nudge rules, report aggregation, activity choice, and
//! (under `speech`) audio DSP and the ECAPA-TDNN speaker model. No I/O here.

pub mod activities;
pub mod report;
pub mod rules;
pub mod speech;

pub use activities::{suggest_activities, ACTIVITIES};
pub use report::{build_report, ReportInput};
pub use rules::NudgePolicy;
