//! Wire types shared by every Inside crate and by researchers: REST bodies,
//! WebSocket messages, NATS payloads and subject names. serde only.

pub mod audio;
pub mod derived;
pub mod error;
pub mod messages;
pub mod realtime;
pub mod report;
pub mod rest;
pub mod subjects;

pub use audio::{AudioSegmentMeta, Capabilities, EmbedRefusal, EmbedReply};
pub use derived::{DerivedFrame, DerivedRecord};
pub use error::{ErrorBody, ErrorDetail};
pub use messages::{ClientMessageType, ServerMessageType};
pub use realtime::*;
pub use report::{Activity, AudioStats, NudgeSummary, Report, ReportPending, SpeakerStats};
pub use rest::*;
pub use subjects::SubjectKind;
