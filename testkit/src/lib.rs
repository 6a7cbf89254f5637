//! Test support for the integration tests of every Inside crate (a dev-dependency only):
//! [`log_capture`] keeps what a test's logs wrote, [`nats_server`] runs a nats-server of a test's own, [`prometheus`] reads a scrape, [`scratch`] makes the PostgreSQL
//! databases and JetStream streams a test uses and removes them after it.

// Test set-up that fails should stop the test at once, with the reason: panics are the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod log_capture;
pub mod nats_server;
pub mod prometheus;
pub mod scratch;
