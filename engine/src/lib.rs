//! Pure logic of Inside: nudge rules, report aggregation, activity choice, (under `speech`)
//! audio DSP and the ECAPA-TDNN speaker model, and (under `conversation`) the features derived
//! from audio: speaking rate, overlap, turns. No I/O here.

pub mod activities;
pub mod conversation;
pub mod report;
pub mod rules;
pub mod speech;

pub use activities::{suggest_activities, ACTIVITIES};
pub use report::{build_report, ReportInput};
pub use rules::NudgePolicy;
