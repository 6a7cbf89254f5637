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

    /// `<prefix>.v1.<kind>.<sid>.<uid>`, every per-user subject, written without the
    /// formatting machinery: one is made for every frame and every nudge.
    fn per_user(&self, kind: &str, sid: Uuid, uid: Uuid) -> String {
        let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let len = self.prefix.len() + ".v1.".len() + kind.len() + 2 * (1 + buf.len());
        let mut subject = String::with_capacity(len);
        subject.push_str(&self.prefix);
        subject.push_str(".v1.");
        subject.push_str(kind);
        for id in [sid, uid] {
            subject.push('.');
            subject.push_str(id.hyphenated().encode_lower(&mut buf));
        }
        subject
    }

    pub fn frames(&self, sid: Uuid, uid: Uuid) -> String {
        self.per_user("frames", sid, uid)
    }

    /// Every member's frames of one session (internal).
    pub fn session_frames(&self, sid: Uuid) -> String {
        format!("{}.v1.frames.{sid}.*", self.prefix)
    }

    pub fn all_frames(&self) -> String {
        format!("{}.v1.frames.>", self.prefix)
    }

    pub fn audio(&self, sid: Uuid, uid: Uuid) -> String {
        self.per_user("audio", sid, uid)
    }

    /// Every member's audio segments of one session (internal).
    pub fn session_audio(&self, sid: Uuid) -> String {
        format!("{}.v1.audio.{sid}.*", self.prefix)
    }

    pub fn all_audio(&self) -> String {
        format!("{}.v1.audio.>", self.prefix)
    }

    pub fn nudges(&self, sid: Uuid, uid: Uuid) -> String {
        self.per_user("nudges", sid, uid)
    }

    pub fn session_nudges(&self, sid: Uuid) -> String {
        format!("{}.v1.nudges.{sid}.*", self.prefix)
    }

    /// Every session's nudges (a gateway reads them all and keeps its own sockets').
    pub fn all_nudges(&self) -> String {
        format!("{}.v1.nudges.*.*", self.prefix)
    }

    pub fn speakers(&self, sid: Uuid) -> String {
        format!("{}.v1.speakers.{sid}", self.prefix)
    }

    /// The conversation features the workers derive from a member's audio
    /// ([`crate::DerivedFrame`], one per hop), published by the worker that computed them.
    pub fn derived(&self, sid: Uuid, uid: Uuid) -> String {
        self.per_user("derived", sid, uid)
    }

    pub fn state(&self, sid: Uuid) -> String {
        format!("{}.v1.state.{sid}", self.prefix)
    }

    /// Every session's speaker events (a gateway reads them all and keeps its own sockets').
    pub fn all_speakers(&self) -> String {
        format!("{}.v1.speakers.*", self.prefix)
    }

    /// Every session's state (workers warm their session cache on a join; a gateway keeps the
    /// sessions it holds sockets of).
    pub fn all_state(&self) -> String {
        format!("{}.v1.state.*", self.prefix)
    }

    pub fn pokes(&self, uid: Uuid) -> String {
        format!("{}.v1.pokes.{uid}", self.prefix)
    }

    /// Every user's pokes (a gateway reads them all and keeps its own sockets').
    pub fn all_pokes(&self) -> String {
        format!("{}.v1.pokes.*", self.prefix)
    }

    /// A copy of `frames(sid, uid)` for researchers, published only while every member of
    /// the session has granted research use. Research subjects live under
    /// `{prefix}.v1.research.`, apart from the internal ones, so one permission
    /// (`*.v1.research.>`) lets a researcher read them and nothing else.
    pub fn research_frames(&self, sid: Uuid, uid: Uuid) -> String {
        self.per_user("research.frames", sid, uid)
    }

    /// A copy of `audio(sid, uid)` for researchers (same rule as [`Self::research_frames`]).
    pub fn research_audio(&self, sid: Uuid, uid: Uuid) -> String {
        self.per_user("research.audio", sid, uid)
    }

    /// A copy of `speakers(sid)` for researchers (same rule as [`Self::research_frames`]).
    pub fn research_speakers(&self, sid: Uuid) -> String {
        format!("{}.v1.research.speakers.{sid}", self.prefix)
    }

    /// A copy of `derived(sid, uid)` for researchers (same rule as [`Self::research_frames`]).
    pub fn research_derived(&self, sid: Uuid, uid: Uuid) -> String {
        self.per_user("research.derived", sid, uid)
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

    /// Every member's research derived features of one session (researchers' tap).
    pub fn research_session_derived(&self, sid: Uuid) -> String {
        format!("{}.v1.research.derived.{sid}.*", self.prefix)
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

    /// One worker process's own inbox for live audio (internal, workers only): a worker that
    /// takes a segment from the queue group for a session another worker owns forwards it here
    /// unchanged, as a request, with the subject it came on in `Inside-Audio-Subject`.
    /// `worker` is the process's id, new at each start.
    pub fn worker_audio(&self, worker: Uuid) -> String {
        format!("{}.v1.workers.{worker}.audio", self.prefix)
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

    /// JetStream stream holding the recent nudges, speaker events and pokes that a reconnecting
    /// socket resumes from: `INSIDE_EVENTS` for the default prefix.
    pub fn events_stream(&self) -> String {
        format!(
            "{}_EVENTS",
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

/// Every subject family Inside publishes on, with its pattern: what the AsyncAPI document
/// lists. `{prefix}` is [`Subjects::prefix`]; `{sid}` a session id, `{uid}` a user id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubjectKind {
    Frames,
    Audio,
    Nudges,
    Speakers,
    Derived,
    State,
    Pokes,
    Embed,
    Capabilities,
    WorkerAudio,
    ReportJobs,
    ResearchFrames,
    ResearchAudio,
    ResearchSpeakers,
    ResearchDerived,
    ResearchState,
}

impl SubjectKind {
    pub const ALL: &'static [SubjectKind] = &[
        SubjectKind::Frames,
        SubjectKind::Audio,
        SubjectKind::Nudges,
        SubjectKind::Speakers,
        SubjectKind::Derived,
        SubjectKind::State,
        SubjectKind::Pokes,
        SubjectKind::Embed,
        SubjectKind::Capabilities,
        SubjectKind::WorkerAudio,
        SubjectKind::ReportJobs,
        SubjectKind::ResearchFrames,
        SubjectKind::ResearchAudio,
        SubjectKind::ResearchSpeakers,
        SubjectKind::ResearchDerived,
        SubjectKind::ResearchState,
    ];

    /// A short stable name (an AsyncAPI channel id).
    pub fn name(self) -> &'static str {
        match self {
            SubjectKind::Frames => "frames",
            SubjectKind::Audio => "audio",
            SubjectKind::Nudges => "nudges",
            SubjectKind::Speakers => "speakers",
            SubjectKind::Derived => "derived",
            SubjectKind::State => "state",
            SubjectKind::Pokes => "pokes",
            SubjectKind::Embed => "embed",
            SubjectKind::Capabilities => "capabilities",
            SubjectKind::WorkerAudio => "workers.audio",
            SubjectKind::ReportJobs => "jobs.report",
            SubjectKind::ResearchFrames => "research.frames",
            SubjectKind::ResearchAudio => "research.audio",
            SubjectKind::ResearchSpeakers => "research.speakers",
            SubjectKind::ResearchDerived => "research.derived",
            SubjectKind::ResearchState => "research.state",
        }
    }

    /// The subject with `{prefix}`, `{sid}` and `{uid}` placeholders.
    pub fn pattern(self) -> &'static str {
        match self {
            SubjectKind::Frames => "{prefix}.v1.frames.{sid}.{uid}",
            SubjectKind::Audio => "{prefix}.v1.audio.{sid}.{uid}",
            SubjectKind::Nudges => "{prefix}.v1.nudges.{sid}.{uid}",
            SubjectKind::Speakers => "{prefix}.v1.speakers.{sid}",
            SubjectKind::Derived => "{prefix}.v1.derived.{sid}.{uid}",
            SubjectKind::State => "{prefix}.v1.state.{sid}",
            SubjectKind::Pokes => "{prefix}.v1.pokes.{uid}",
            SubjectKind::Embed => "{prefix}.v1.embed",
            SubjectKind::Capabilities => "{prefix}.v1.capabilities",
            SubjectKind::WorkerAudio => "{prefix}.v1.workers.{worker}.audio",
            SubjectKind::ReportJobs => "{prefix}.v1.jobs.report",
            SubjectKind::ResearchFrames => "{prefix}.v1.research.frames.{sid}.{uid}",
            SubjectKind::ResearchAudio => "{prefix}.v1.research.audio.{sid}.{uid}",
            SubjectKind::ResearchSpeakers => "{prefix}.v1.research.speakers.{sid}",
            SubjectKind::ResearchDerived => "{prefix}.v1.research.derived.{sid}.{uid}",
            SubjectKind::ResearchState => "{prefix}.v1.research.state.{sid}",
        }
    }

    /// The pattern under `prefix`, placeholders for the ids kept.
    pub fn address(self, prefix: &str) -> String {
        self.pattern().replace("{prefix}", prefix)
    }

    /// The concrete subject, as [`Subjects`] makes it (ids a family does not use are ignored;
    /// [`SubjectKind::WorkerAudio`] takes `uid` as the worker's id).
    pub fn subject(self, s: &Subjects, sid: Uuid, uid: Uuid) -> String {
        match self {
            SubjectKind::Frames => s.frames(sid, uid),
            SubjectKind::Audio => s.audio(sid, uid),
            SubjectKind::Nudges => s.nudges(sid, uid),
            SubjectKind::Speakers => s.speakers(sid),
            SubjectKind::Derived => s.derived(sid, uid),
            SubjectKind::State => s.state(sid),
            SubjectKind::Pokes => s.pokes(uid),
            SubjectKind::Embed => s.embed(),
            SubjectKind::Capabilities => s.capabilities(),
            SubjectKind::WorkerAudio => s.worker_audio(uid),
            SubjectKind::ReportJobs => s.report_jobs(),
            SubjectKind::ResearchFrames => s.research_frames(sid, uid),
            SubjectKind::ResearchAudio => s.research_audio(sid, uid),
            SubjectKind::ResearchSpeakers => s.research_speakers(sid),
            SubjectKind::ResearchDerived => s.research_derived(sid, uid),
            SubjectKind::ResearchState => s.research_state(sid),
        }
    }

    /// Whether researchers may read it (`*.v1.research.>`).
    pub fn is_research(self) -> bool {
        matches!(
            self,
            SubjectKind::ResearchFrames
                | SubjectKind::ResearchAudio
                | SubjectKind::ResearchSpeakers
                | SubjectKind::ResearchDerived
                | SubjectKind::ResearchState
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subject_kind_pattern_is_what_subjects_makes() {
        let s = Subjects::new("pfx");
        let (sid, uid) = (Uuid::new_v4(), Uuid::new_v4());
        for kind in SubjectKind::ALL {
            let filled = kind
                .address("pfx")
                .replace("{sid}", &sid.to_string())
                .replace("{uid}", &uid.to_string())
                .replace("{worker}", &uid.to_string());
            assert_eq!(filled, kind.subject(&s, sid, uid), "{kind:?}");
            assert_eq!(kind.is_research(), filled.starts_with("pfx.v1.research."));
        }
    }

    #[test]
    fn default_subjects_match_the_contract() {
        let s = Subjects::default();
        let (sid, uid) = (Uuid::nil(), Uuid::max());
        assert_eq!(s.frames(sid, uid), format!("inside.v1.frames.{sid}.{uid}"));
        assert_eq!(s.nudges(sid, uid), format!("inside.v1.nudges.{sid}.{uid}"));
        assert_eq!(s.speakers(sid), format!("inside.v1.speakers.{sid}"));
        assert_eq!(
            s.derived(sid, uid),
            format!("inside.v1.derived.{sid}.{uid}")
        );
        assert_eq!(s.pokes(uid), format!("inside.v1.pokes.{uid}"));
        assert_eq!(s.embed(), "inside.v1.embed");
        assert_eq!(s.capabilities(), "inside.v1.capabilities");
        assert_eq!(
            s.worker_audio(uid),
            format!("inside.v1.workers.{uid}.audio")
        );
        assert_eq!(s.report_jobs(), "inside.v1.jobs.report");
        assert_eq!(s.jobs_stream(), "INSIDE_JOBS");
        assert_eq!(s.events_stream(), "INSIDE_EVENTS");
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
        for internal in [s.all_frames(), s.all_audio(), s.worker_audio(uid)] {
            assert!(!internal.starts_with("inside.v1.research"));
        }
    }
}
