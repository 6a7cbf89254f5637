//! REST request and response bodies of `/v1`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SignupRequest {
    #[cfg_attr(feature = "openapi", schema(example = "ada@example.com", format = Email, max_length = 254))]
    pub email: String,
    /// At least 8 characters and at most 72 bytes (bcrypt reads 72 bytes; longer is refused, never cut).
    #[cfg_attr(feature = "openapi", schema(min_length = 8, max_length = 72))]
    pub password: String,
    /// 1..=100 characters, not only spaces.
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 100, pattern = r"\S")
    )]
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RefreshRequest {
    pub refresh_token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    /// Always `bearer`.
    pub token_type: String,
    /// Lifetime of the access token in seconds.
    pub expires_in: u64,
    pub user: User,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VoiceprintStatus {
    pub enrolled: bool,
    pub updated_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VoiceprintEnrolled {
    pub enrolled: bool,
    pub seconds: f64,
    pub quality: f64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RelationshipKind {
    Romantic,
    Family,
    Friends,
    Work,
    Other,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ConsentStatus {
    Pending,
    Granted,
    Revoked,
}

/// What a member may set their own consent to.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ConsentChoice {
    Granted,
    Revoked,
}

impl From<ConsentChoice> for ConsentStatus {
    fn from(c: ConsentChoice) -> Self {
        match c {
            ConsentChoice::Granted => ConsentStatus::Granted,
            ConsentChoice::Revoked => ConsentStatus::Revoked,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateRelationship {
    #[cfg_attr(feature = "openapi", schema(format = Email, max_length = 254))]
    pub partner_email: String,
    pub kind: RelationshipKind,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConsentUpdate {
    pub status: ConsentChoice,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Member {
    /// Null until the member has an account and, for an invited member seen by
    /// the others, until they answer the invitation (consent no longer
    /// `pending`): inviting an address never reveals whether it has an account.
    pub user_id: Option<Uuid>,
    pub email: String,
    /// Null under the same rule as `user_id`.
    pub name: Option<String>,
    pub consent: ConsentStatus,
    /// Whether this member agreed that researchers may receive the live data of the
    /// relationship's sessions (`pending` until they decide; off unless `granted`). Research
    /// copies are published only while every member has granted both this and `consent`.
    pub research_consent: ConsentStatus,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Relationship {
    pub id: Uuid,
    pub kind: RelationshipKind,
    pub created_at: DateTime<Utc>,
    pub members: Vec<Member>,
}

impl Relationship {
    /// The first member without an account or whose consent is not `granted`: starting a
    /// session, joining one and poking all need every member's consent.
    pub fn member_without_consent(&self) -> Option<&Member> {
        self.members
            .iter()
            .find(|m| m.user_id.is_none() || m.consent != ConsentStatus::Granted)
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    Active,
    Finalizing,
    Completed,
    /// The report job failed after its retries; an operator can re-run it
    /// (`gateway report rerun <sid>`).
    Failed,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateSession {
    pub relationship_id: Uuid,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Session {
    pub id: Uuid,
    pub relationship_id: Uuid,
    pub status: SessionStatus,
    pub created_at: DateTime<Utc>,
    pub finalized_at: Option<DateTime<Utc>>,
}

/// A session in the history list, with whether its report is ready.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistoryItem {
    pub id: Uuid,
    pub relationship_id: Uuid,
    pub status: SessionStatus,
    pub created_at: DateTime<Utc>,
    pub finalized_at: Option<DateTime<Utc>>,
    pub report_ready: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistoryPage {
    pub items: Vec<HistoryItem>,
    /// Pass as `cursor` to get the next (older) page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PokeKind {
    ThinkingOfYou,
    Hug,
    TalkTonight,
    Custom,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatePoke {
    pub relationship_id: Uuid,
    pub kind: PokeKind,
    /// Up to 500 characters; blank is stored as null.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 500))]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Poke {
    pub id: Uuid,
    pub relationship_id: Uuid,
    pub from_user_id: Uuid,
    pub kind: PokeKind,
    pub message: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PokePage {
    pub items: Vec<Poke>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    /// `ok` or `degraded`.
    pub status: String,
    pub version: String,
    /// Per dependency: `ok` or the error text.
    pub checks: std::collections::BTreeMap<String, String>,
    /// Whether live audio can be attributed now: a worker with a speaker model answered
    /// (with NATS), or this process has one (embedded). Informational: `false` does not make
    /// the status `degraded`, but `client.audio_start` is then refused with
    /// `audio_unavailable`.
    pub speaker_available: bool,
}
