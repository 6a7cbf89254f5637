//! Pure logic of Inside: nudge rules, report aggregation, activity choice, and
//! (under `speech`) audio DSP and the ECAPA-TDNN speaker model. No I/O here.

pub mod speech;
