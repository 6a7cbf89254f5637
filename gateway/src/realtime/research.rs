//! `ResearchGate`: copies a session's live data (feature frames, audio segments) to the
//! research subjects (`inside.v1.research.…`) only while every member of the session's
//! relationship has granted both consent and research use. The internal subjects the pipeline
//! reads are not visible to researchers; these copies are all they get.
//!
//! The decision comes from the [`SessionDirectory`] cache: a hash lookup per frame, refreshed in
//! the background at most every `FRESH_FOR` (2 s). A change of research consent made on this
//! gateway forgets the relationship's entries at once; one made through another gateway is seen
//! here within 2 s plus one query. Until a session has been read (its first frame here), and
//! whenever it cannot be read, nothing is copied: the gate fails closed.

use bytes::Bytes;
use inside_bus::{Bus, Headers};
use inside_store::SessionDirectory;
use uuid::Uuid;

#[derive(Clone)]
pub struct ResearchGate {
    bus: Bus,
    directory: SessionDirectory,
}

impl ResearchGate {
    pub fn new(bus: Bus, directory: SessionDirectory) -> Self {
        Self { bus, directory }
    }

    /// Reads `sid`'s members into the cache before its socket's first frame, so that frame does
    /// not wait on the database (every socket of a starting session would queue behind it).
    pub async fn warm(&self, sid: Uuid) {
        let _ = self.directory.get(sid).await;
    }

    /// Whether `sid`'s data may go to researchers now.
    pub async fn allows(&self, sid: Uuid) -> bool {
        self.directory
            .get(sid)
            .await
            .is_some_and(|a| a.research_allowed())
    }

    /// Publishes a copy of `uid`'s frame on `research.frames.<sid>.<uid>` when allowed.
    pub async fn copy_frame(&self, sid: Uuid, uid: Uuid, payload: &Bytes) {
        if !self.allows(sid).await {
            return;
        }
        let subject = self.bus.subjects().research_frames(sid, uid);
        match self.bus.publish(subject, payload.clone()).await {
            Ok(()) => {
                metrics::counter!("inside_research_copies_total", "kind" => "frames").increment(1)
            }
            Err(e) => tracing::warn!(%sid, error = %e, "publishing a research frame failed"),
        }
    }

    /// Publishes a copy of `uid`'s audio segment on `research.audio.<sid>.<uid>` when allowed.
    pub async fn copy_audio(&self, sid: Uuid, uid: Uuid, headers: &Headers, payload: &Bytes) {
        if !self.allows(sid).await {
            return;
        }
        let subject = self.bus.subjects().research_audio(sid, uid);
        match self
            .bus
            .publish_with_headers(subject, headers.clone(), payload.clone())
            .await
        {
            Ok(()) => {
                metrics::counter!("inside_research_copies_total", "kind" => "audio").increment(1)
            }
            Err(e) => {
                tracing::warn!(%sid, error = %e, "publishing a research audio segment failed")
            }
        }
    }

    /// Tells researchers that `sid` was finalized (`research.state.<sid>`): their taps end
    /// there instead of waiting forever. Only for a session whose copies they were getting:
    /// the caller asks [`Self::allows`] before the finalize, as a finalizing session no
    /// longer allows copies.
    pub async fn announce_finalized(&self, sid: Uuid) {
        let subject = self.bus.subjects().research_state(sid);
        if let Err(e) = self
            .bus
            .publish_json(subject, &inside_bus::StateEvent::Finalized)
            .await
        {
            tracing::warn!(%sid, error = %e, "announcing the finalize to researchers failed");
        }
    }

    /// After a consent or research-consent change in relationship `rid`: decide again from the
    /// database on the next frame.
    pub fn forget_relationship(&self, rid: Uuid) {
        self.directory.forget_relationship(rid);
    }
}
