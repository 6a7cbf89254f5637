//! NATS subject names. Versioned and stable. Internal subjects (`{prefix}.v1.frames.…`, …)
//! carry the realtime path between gateways and workers; researchers read only the copies under
//! `{prefix}.v1.research.…`, published while every member of the session agreed to research use.
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

    /// Every member's frames of one session (internal).
    pub fn session_frames(&self, sid: Uuid) -> String {
        format!("{}.v1.frames.{sid}.*", self.prefix)
    }

    pub fn all_frames(&self) -> String {
        format!("{}.v1.frames.>", self.prefix)
    }

    pub fn audio(&self, sid: Uuid, uid: Uuid) -> String {
        format!("{}.v1.audio.{sid}.{uid}", self.prefix)
    }

    /// Every member's audio segments of one session (internal).
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

    /// Every session's state (workers warm their session cache on a join).
    pub fn all_state(&self) -> String {
        format!("{}.v1.state.*", self.prefix)
    }

    pub fn pokes(&self, uid: Uuid) -> String {
        format!("{}.v1.pokes.{uid}", self.prefix)
    }

    /// A copy of `frames(sid, uid)` for researchers, published only while every member of
    /// the session has granted research use. Research subjects live under
    /// `{prefix}.v1.research.`, apart from the internal ones, so one permission
    /// (`*.v1.research.>`) lets a researcher read them and nothing else.
    pub fn research_frames(&self, sid: Uuid, uid: Uuid) -> String {
        format!("{}.v1.research.frames.{sid}.{uid}", self.prefix)
    }

    /// A copy of `audio(sid, uid)` for researchers (same rule as [`Self::research_frames`]).
    pub fn research_audio(&self, sid: Uuid, uid: Uuid) -> String {
        format!("{}.v1.research.audio.{sid}.{uid}", self.prefix)
    }

    /// A copy of `speakers(sid)` for researchers (same rule as [`Self::research_frames`]).
    pub fn research_speakers(&self, sid: Uuid) -> String {
        format!("{}.v1.research.speakers.{sid}", self.prefix)
    }

    /// The end of a session for researchers: `{"event":"finalized"}` once it is finalized,
    /// published only while every member has granted research use (same rule as
    /// [`Self::research_frames`]). `worker tap` stops on it.
    pub fn research_state(&self, sid: Uuid) -> String {
        format!("{}.v1.research.state.{sid}", self.prefix)
    }

    /// Every member's research frames of one session (researchers' tap).
    pub fn research_session_frames(&self, sid: Uuid) -> String {
        format!("{}.v1.research.frames.{sid}.*", self.prefix)
    }

    /// Every member's research audio segments of one session (researchers' tap).
    pub fn research_session_audio(&self, sid: Uuid) -> String {
        format!("{}.v1.research.audio.{sid}.*", self.prefix)
    }

    /// Everything published for researchers, every session.
    pub fn all_research(&self) -> String {
        format!("{}.v1.research.>", self.prefix)
    }

    pub fn embed(&self) -> String {
        format!("{}.v1.embed", self.prefix)
    }

    /// Request/reply: workers with a speaker model answer (queue group `workers`, so one
    /// does) with [`crate::audio::Capabilities`]; no answer means no live audio attribution.
    pub fn capabilities(&self) -> String {
        format!("{}.v1.capabilities", self.prefix)
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
        assert_eq!(s.capabilities(), "inside.v1.capabilities");
        assert_eq!(s.report_jobs(), "inside.v1.jobs.report");
        assert_eq!(s.jobs_stream(), "INSIDE_JOBS");
    }

    #[test]
    fn research_subjects_are_apart_from_the_internal_ones() {
        let s = Subjects::default();
        let (sid, uid) = (Uuid::nil(), Uuid::max());
        assert_eq!(
            s.research_frames(sid, uid),
            format!("inside.v1.research.frames.{sid}.{uid}")
        );
        assert_eq!(
            s.research_state(sid),
            format!("inside.v1.research.state.{sid}")
        );
        assert_eq!(
            s.research_audio(sid, uid),
            format!("inside.v1.research.audio.{sid}.{uid}")
        );
        assert_eq!(
            s.research_speakers(sid),
            format!("inside.v1.research.speakers.{sid}")
        );
        assert_eq!(
            s.research_session_frames(sid),
            format!("inside.v1.research.frames.{sid}.*")
        );
        assert_eq!(s.all_research(), "inside.v1.research.>");
        // the internal wildcards the pipeline subscribes to do not see research copies
        for internal in [s.all_frames(), s.all_audio()] {
            assert!(!internal.starts_with("inside.v1.research"));
        }
    }
}
