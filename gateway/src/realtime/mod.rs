//! The realtime WebSocket: upgrade and auth, one task per connection, and the
//! `SessionHub` that routes nudges, speakers, session state and pokes from the bus to
//! the sockets this gateway holds.

pub mod attribution;
mod audio;
mod budget;
pub mod caps;
mod connection;
mod consent;
mod frame_seqs;
pub mod hub;
mod inbound;
mod presence;
pub mod protocol;
pub mod research;
mod resume;
mod send_queue;
mod tally;
mod upgrade;

use axum::routing::get;
use axum::Router;

pub use attribution::SpeakerProbe;
pub use hub::SessionHub;
pub use presence::{PresenceTimers, CLOSE_FINALIZED, CLOSE_REVOKED};
pub use research::ResearchGate;

use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/sessions/{sid}/ws", get(upgrade::upgrade))
}
