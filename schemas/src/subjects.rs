//! NATS subject names. Versioned and stable: researchers subscribe to them.
//! A prefix other than `inside` lets tests share one NATS server.

use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
}

impl Default for Subjects {
    fn default() -> Self {
        Self::new("inside")
    }
}

impl Subjects {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn frames(&self, sid: Uuid, uid: Uuid) -> String {
        format!("{}.v1.frames.{sid}.{uid}", self.prefix)
    }

    /// Every member's frames of one session (researchers' tap).
    pub fn session_frames(&self, sid: Uuid) -> String {
        format!("{}.v1.frames.{sid}.*", self.prefix)
    }

    pub fn all_frames(&self) -> String {
        format!("{}.v1.frames.>", self.prefix)
    }

    pub fn audio(&self, sid: Uuid, uid: Uuid) -> String {
        format!("{}.v1.audio.{sid}.{uid}", self.prefix)
    }

    /// Every member's audio segments of one session (researchers' tap).
    pub fn session_audio(&self, sid: Uuid) -> String {
        format!("{}.v1.audio.{sid}.*", self.prefix)
    }

    pub fn all_audio(&self) -> String {
        format!("{}.v1.audio.>", self.prefix)
    }

    pub fn nudges(&self, sid: Uuid, uid: Uuid) -> String {
        format!("{}.v1.nudges.{sid}.{uid}", self.prefix)
    }

    pub fn session_nudges(&self, sid: Uuid) -> String {
        format!("{}.v1.nudges.{sid}.*", self.prefix)
    }

    pub fn speakers(&self, sid: Uuid) -> String {
        format!("{}.v1.speakers.{sid}", self.prefix)
    }

    pub fn state(&self, sid: Uuid) -> String {
        format!("{}.v1.state.{sid}", self.prefix)
    }

    pub fn pokes(&self, uid: Uuid) -> String {
        format!("{}.v1.pokes.{uid}", self.prefix)
    }

    pub fn embed(&self) -> String {
        format!("{}.v1.embed", self.prefix)
    }

    pub fn report_jobs(&self) -> String {
        format!("{}.v1.jobs.report", self.prefix)
    }

    /// JetStream object store bucket for request bodies over NATS's `max_payload`:
    /// `INSIDE_UPLOADS` for the default prefix.
    pub fn uploads_bucket(&self) -> String {
        format!(
            "{}_UPLOADS",
            self.prefix.to_uppercase().replace(['.', '-'], "_")
        )
    }

    /// JetStream stream holding report jobs: `INSIDE_JOBS` for the default prefix.
    pub fn jobs_stream(&self) -> String {
        format!(
            "{}_JOBS",
            self.prefix.to_uppercase().replace(['.', '-'], "_")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_subjects_match_the_contract() {
        let s = Subjects::default();
        let (sid, uid) = (Uuid::nil(), Uuid::max());
        assert_eq!(s.frames(sid, uid), format!("inside.v1.frames.{sid}.{uid}"));
        assert_eq!(s.nudges(sid, uid), format!("inside.v1.nudges.{sid}.{uid}"));
        assert_eq!(s.speakers(sid), format!("inside.v1.speakers.{sid}"));
        assert_eq!(s.pokes(uid), format!("inside.v1.pokes.{uid}"));
        assert_eq!(s.embed(), "inside.v1.embed");
        assert_eq!(s.report_jobs(), "inside.v1.jobs.report");
        assert_eq!(s.jobs_stream(), "INSIDE_JOBS");
    }
}
