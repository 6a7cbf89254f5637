//! Turn taking from per-hop activity, at the activity's 10 ms resolution: turns, interruptions,
//! long monologues and silences per member, and loudness against the member's own baseline.
//!
//! Definitions (thresholds in [`TurnConfig`]):
//! - **utterance**: a member's speech with pauses shorter than `hold_gap_ms` bridged; a member
//!   is *mid-utterance* until silent for `hold_gap_ms`.
//! - **turn**: a member's speech with pauses shorter than `bridge_ms` bridged; it counts once it
//!   has lasted `min_turn_ms` (shorter ones are backchannels: "mm", "yes").
//! - **interruption** of A by B: B starts an utterance at t while A is mid-utterance in a turn
//!   that began at least `interrupt_after_ms` before t, and both stay mid-utterance through
//!   t + `interrupt_overlap_ms`. It counts for B (made) and for A (suffered) at that moment. So a
//!   backchannel (B stops first), a turn-end overlap (A stops first) and B starting in A's pause
//!   of `hold_gap_ms` or more are not interruptions.
//! - **monologue**: a turn lasting `monologue_ms`; counted once per turn.
//! - **silence**: nobody speaking for `silence_ms`, after someone has spoken; counted once each.
//! - **loudness**: the RMS level of a member's speaking frames in the hop (dBFS), and its rise
//!   over the member's baseline (an exponential average of their own speaking hops, time
//!   constant `loudness_tau_ms`), once `loudness_min_baseline_ms` of their speech is in it. A
//!   rise of `raised_voice_db` starts a raised-voice episode, counted once until it falls back.

use super::activity::HopActivity;
use super::FRAME_MS;

/// Thresholds of [`TurnTracker`]; the defaults suit a calm two-person conversation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TurnConfig {
    /// Pauses shorter than this stay inside a turn (1 s).
    pub bridge_ms: u32,
    /// A turn counts from this length on (500 ms).
    pub min_turn_ms: u32,
    /// Pauses shorter than this stay inside an utterance (300 ms, the usual minimum pause).
    pub hold_gap_ms: u32,
    /// The interrupted member must have held the turn this long when the other starts (1 s).
    pub interrupt_after_ms: u32,
    /// … and both must go on talking this long after (600 ms).
    pub interrupt_overlap_ms: u32,
    /// A turn this long is a monologue (60 s).
    pub monologue_ms: u32,
    /// Nobody speaking this long is a silence (5 s).
    pub silence_ms: u32,
    /// Time constant of the loudness baseline (30 s of the member's speech).
    pub loudness_tau_ms: u32,
    /// Speech needed in the baseline before a rise over it is reported (3 s).
    pub loudness_min_baseline_ms: u32,
    /// A rise of this much over the baseline is a raised voice (6 dB: twice the sound pressure).
    pub raised_voice_db: f32,
}

impl Default for TurnConfig {
    fn default() -> Self {
        Self {
            bridge_ms: 1000,
            min_turn_ms: 500,
            hold_gap_ms: 300,
            interrupt_after_ms: 1000,
            interrupt_overlap_ms: 600,
            monologue_ms: 60_000,
            silence_ms: 5000,
            loudness_tau_ms: 30_000,
            loudness_min_baseline_ms: 3000,
            raised_voice_db: 6.0,
        }
    }
}

/// One member's counters and state at the end of a hop.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct MemberTurns {
    pub turns: u32,
    /// Interruptions this member made.
    pub interruptions: u32,
    /// Times this member was interrupted.
    pub interrupted: u32,
    pub monologues: u32,
    /// Length of the member's current turn (0 when not in one).
    pub turn_ms: u64,
    /// RMS level of the member's speech in the hop; `None` when silent.
    pub loudness_db: Option<f32>,
    /// That level over the member's baseline; `None` until the baseline is settled.
    pub loudness_over_baseline_db: Option<f32>,
    pub raised_voice_episodes: u32,
}

/// The conversation's state at the end of a hop.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnSnapshot {
    pub hop: u64,
    pub members: Vec<MemberTurns>,
    pub silences: u32,
    /// Length of the current silence (0 while someone speaks).
    pub silence_ms: u64,
}

#[derive(Debug, Clone, Default)]
struct MemberState {
    out: MemberTurns,
    last_speech: Option<u64>,
    turn_start: Option<u64>,
    utterance_start: Option<u64>,
    turn_counted: bool,
    monologue_counted: bool,
    baseline_db: Option<f32>,
    baseline_ms: u64,
    raised: bool,
}

/// A candidate interruption: `by` started at `at` over `of`.
#[derive(Debug, Clone, Copy)]
struct Pending {
    by: usize,
    of: usize,
    at: u64,
}

/// Incremental turn taking over [`HopActivity`], members in a fixed order.
#[derive(Debug, Clone)]
pub struct TurnTracker {
    cfg: TurnConfig,
    members: Vec<MemberState>,
    frame: u64,
    pending: Vec<Pending>,
    silent_run: u64,
    anyone_spoke: bool,
    silence_counted: bool,
    silences: u32,
}

fn frames(ms: u32) -> u64 {
    u64::from(ms.div_ceil(FRAME_MS))
}

impl TurnTracker {
    pub fn new(members: usize, cfg: TurnConfig) -> Self {
        Self {
            cfg,
            members: vec![MemberState::default(); members],
            frame: 0,
            pending: Vec::new(),
            silent_run: 0,
            anyone_spoke: false,
            silence_counted: false,
            silences: 0,
        }
    }

    pub fn config(&self) -> &TurnConfig {
        &self.cfg
    }

    /// Add one hop (members missing from it are silent); the state at its end.
    pub fn push(&mut self, hop: &HopActivity) -> TurnSnapshot {
        for i in 0..hop.frames() {
            let speaking: Vec<bool> = (0..self.members.len())
                .map(|m| hop.members.get(m).is_some_and(|a| a.speaks_in(i)))
                .collect();
            self.on_frame(&speaking);
        }
        for (m, st) in self.members.iter_mut().enumerate() {
            let act = hop.members.get(m).copied().unwrap_or_default();
            Self::loudness(&self.cfg, st, act.loudness_db, act.speech_ms(), hop.hop_ms);
        }
        let ms = u64::from(FRAME_MS);
        TurnSnapshot {
            hop: hop.hop,
            members: self
                .members
                .iter()
                .map(|st| MemberTurns {
                    turn_ms: st
                        .turn_start
                        .zip(st.last_speech)
                        .map_or(0, |(s, l)| (l + 1 - s) * ms),
                    ..st.out
                })
                .collect(),
            silences: self.silences,
            silence_ms: if self.anyone_spoke {
                self.silent_run * ms
            } else {
                0
            },
        }
    }

    fn on_frame(&mut self, speaking: &[bool]) {
        let f = self.frame;
        self.frame += 1;
        let c = self.cfg;
        let mut starts = Vec::new();
        for (m, st) in self.members.iter_mut().enumerate() {
            let gap = st.last_speech.map(|l| f - l);
            if speaking[m] {
                // A pause long enough ended the turn and the utterance in the branch below.
                if st.turn_start.is_none() {
                    st.turn_start = Some(f);
                    st.turn_counted = false;
                    st.monologue_counted = false;
                }
                if st.utterance_start.is_none() {
                    st.utterance_start = Some(f);
                    starts.push(m);
                }
                st.last_speech = Some(f);
                let len = f + 1 - st.turn_start.unwrap_or(f);
                if !st.turn_counted && len >= frames(c.min_turn_ms) {
                    st.turn_counted = true;
                    st.out.turns += 1;
                }
                if !st.monologue_counted && len >= frames(c.monologue_ms) {
                    st.monologue_counted = true;
                    st.out.monologues += 1;
                }
            } else if let Some(g) = gap {
                if g >= frames(c.bridge_ms) {
                    st.turn_start = None;
                }
                if g >= frames(c.hold_gap_ms) {
                    st.utterance_start = None;
                }
            }
        }
        for &by in &starts {
            for (of, st) in self.members.iter().enumerate() {
                let held = st
                    .turn_start
                    .is_some_and(|s| f >= s + frames(c.interrupt_after_ms));
                if of != by && st.utterance_start.is_some() && held {
                    self.pending.push(Pending { by, of, at: f });
                }
            }
        }
        let members = &mut self.members;
        self.pending.retain(|p| {
            let live = |m: usize| members.get(m).and_then(|s| s.utterance_start);
            if live(p.of).is_none() || live(p.by) != Some(p.at) {
                return false;
            }
            if f + 1 - p.at < frames(c.interrupt_overlap_ms) {
                return true;
            }
            if let Some(s) = members.get_mut(p.by) {
                s.out.interruptions += 1;
            }
            if let Some(s) = members.get_mut(p.of) {
                s.out.interrupted += 1;
            }
            false
        });
        if speaking.iter().any(|&s| s) {
            self.anyone_spoke = true;
            self.silent_run = 0;
            self.silence_counted = false;
        } else {
            self.silent_run += 1;
            if self.anyone_spoke && !self.silence_counted && self.silent_run >= frames(c.silence_ms)
            {
                self.silence_counted = true;
                self.silences += 1;
            }
        }
    }

    fn loudness(
        c: &TurnConfig,
        st: &mut MemberState,
        level: Option<f32>,
        speech_ms: u32,
        hop_ms: u32,
    ) {
        st.out.loudness_db = level;
        st.out.loudness_over_baseline_db = None;
        let Some(l) = level else {
            st.raised = false;
            return;
        };
        if let Some(b) = st.baseline_db {
            if st.baseline_ms >= u64::from(c.loudness_min_baseline_ms) {
                let rise = l - b;
                st.out.loudness_over_baseline_db = Some(rise);
                if rise >= c.raised_voice_db && !st.raised {
                    st.out.raised_voice_episodes += 1;
                }
                st.raised = rise >= c.raised_voice_db;
            }
        }
        // Weighted by the speech in the hop: a hop with one spoken frame barely moves it.
        let alpha = (speech_ms as f32 / c.loudness_tau_ms.max(hop_ms) as f32).min(1.0);
        st.baseline_db = Some(st.baseline_db.map_or(l, |b| b + alpha * (l - b)));
        st.baseline_ms += u64::from(speech_ms);
    }
}
