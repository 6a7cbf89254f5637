//! The live path's audio front end: feed raw PCM chunks as they arrive over the WebSocket, get
//! fixed-length 16 kHz mono segments (about 1.5 s) with their stream-relative times out.

use rubato::{FftFixedIn, Resampler};

use super::audio::{check_params, downmix, SAMPLE_RATE};
use super::error::{Result, SpeechError};

/// Default live segment: long enough for a stable embedding, short enough to follow turns.
pub const DEFAULT_SEGMENT_MS: u32 = 1500;

/// A final partial segment shorter than this is dropped at `finish`: too short to embed well.
const MIN_TAIL_MS: u64 = 500;

/// Input chunk the streaming resampler consumes at a time (frames at the source rate).
const RESAMPLER_CHUNK: usize = 1024;

/// One cut of the stream: 16 kHz mono samples covering `[start_ms, end_ms)` of the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// 0, 1, 2, … in stream order.
    pub seq: u64,
    pub start_ms: u64,
    pub end_ms: u64,
    pub samples: Vec<f32>,
}

/// Incremental decoder + resampler + segmenter for one audio stream (`pcm_s16le` or f32).
pub struct StreamSegmenter {
    channels: usize,
    segment_len: usize,
    max_frames_in: u64,
    frames_in: u64,
    /// An odd byte or an incomplete frame left over from the previous chunk.
    carry: Vec<u8>,
    resampler: Option<FftFixedIn<f32>>,
    /// Mono input waiting for a full resampler chunk.
    pending: Vec<f32>,
    /// Output samples still to drop (the resampler's delay).
    delay_left: usize,
    /// 16 kHz samples not yet cut into a segment.
    buf: Vec<f32>,
    /// 16 kHz samples already handed out in segments.
    emitted: u64,
    /// 16 kHz samples the input so far corresponds to (for trimming the flush).
    expected_out: u64,
    rate: u32,
    seq: u64,
}

impl StreamSegmenter {
    /// `max_seconds` bounds the whole stream: past it `push_*` fails with `TooLarge`.
    pub fn new(
        sample_rate: u32,
        channels: usize,
        segment_ms: u32,
        max_seconds: f64,
    ) -> Result<Self> {
        check_params(sample_rate, channels)?;
        if segment_ms < 100 {
            return Err(SpeechError::InvalidParams(format!(
                "segment of {segment_ms} ms"
            )));
        }
        let resampler = if sample_rate == SAMPLE_RATE {
            None
        } else {
            Some(
                FftFixedIn::<f32>::new(
                    sample_rate as usize,
                    SAMPLE_RATE as usize,
                    RESAMPLER_CHUNK,
                    2,
                    1,
                )
                .map_err(|e| SpeechError::Resample(e.to_string()))?,
            )
        };
        let delay_left = resampler.as_ref().map_or(0, |r| r.output_delay());
        Ok(Self {
            channels,
            segment_len: (SAMPLE_RATE as usize * segment_ms as usize) / 1000,
            max_frames_in: (max_seconds.max(0.0) * f64::from(sample_rate)) as u64,
            frames_in: 0,
            carry: Vec::new(),
            resampler,
            pending: Vec::new(),
            delay_left,
            buf: Vec::new(),
            emitted: 0,
            expected_out: 0,
            rate: sample_rate,
            seq: 0,
        })
    }

    /// Feeds little-endian i16 interleaved bytes; chunk boundaries may fall anywhere.
    pub fn push_s16le(&mut self, bytes: &[u8]) -> Result<Vec<Segment>> {
        let frame_bytes = 2 * self.channels;
        self.carry.extend_from_slice(bytes);
        let whole = self.carry.len() / frame_bytes * frame_bytes;
        let samples = super::audio::s16le_to_f32(&self.carry[..whole]);
        self.carry.drain(..whole);
        self.push_f32(&samples)
    }

    /// Feeds interleaved f32 samples (whole frames) at the stream's rate and channel count.
    pub fn push_f32(&mut self, interleaved: &[f32]) -> Result<Vec<Segment>> {
        if !interleaved.len().is_multiple_of(self.channels) {
            return Err(SpeechError::InvalidParams(
                "partial frame in f32 chunk".into(),
            ));
        }
        let frames = (interleaved.len() / self.channels) as u64;
        if self.frames_in + frames > self.max_frames_in {
            return Err(SpeechError::TooLarge(format!(
                "stream over {:.1} s",
                self.max_frames_in as f64 / f64::from(self.rate)
            )));
        }
        self.frames_in += frames;
        self.expected_out =
            (self.frames_in * u64::from(SAMPLE_RATE)).div_ceil(u64::from(self.rate));
        let mono = downmix(interleaved, self.channels);
        match self.resampler.as_mut() {
            None => self.buf.extend_from_slice(&mono),
            Some(rs) => {
                self.pending.extend_from_slice(&mono);
                let mut pos = 0;
                while self.pending.len() - pos >= rs.input_frames_next() {
                    let n = rs.input_frames_next();
                    let out = rs
                        .process(&[&self.pending[pos..pos + n]], None)
                        .map_err(|e| SpeechError::Resample(e.to_string()))?;
                    pos += n;
                    push_after_delay(&mut self.buf, &mut self.delay_left, &out[0]);
                }
                self.pending.drain(..pos);
            }
        }
        Ok(self.cut(false))
    }

    /// Ends the stream: flushes the resampler and returns what is left: whole segments the
    /// flush completed, then the last partial one if it is long enough to be worth embedding.
    pub fn finish(&mut self) -> Result<Vec<Segment>> {
        if let Some(rs) = self.resampler.as_mut() {
            if !self.pending.is_empty() {
                let out = rs
                    .process_partial(Some(&[&self.pending[..]]), None)
                    .map_err(|e| SpeechError::Resample(e.to_string()))?;
                self.pending.clear();
                push_after_delay(&mut self.buf, &mut self.delay_left, &out[0]);
            }
            while self.emitted + (self.buf.len() as u64) < self.expected_out {
                let out = rs
                    .process_partial::<&[f32]>(None, None)
                    .map_err(|e| SpeechError::Resample(e.to_string()))?;
                if out[0].is_empty() {
                    break;
                }
                push_after_delay(&mut self.buf, &mut self.delay_left, &out[0]);
            }
            let keep = self.expected_out.saturating_sub(self.emitted) as usize;
            self.buf.truncate(keep);
        }
        Ok(self.cut(true))
    }

    /// Stream time covered by the segments handed out so far.
    pub fn emitted_ms(&self) -> u64 {
        self.emitted * 1000 / u64::from(SAMPLE_RATE)
    }

    fn cut(&mut self, last: bool) -> Vec<Segment> {
        let mut segs = Vec::new();
        let mut start = 0;
        while self.buf.len() - start >= self.segment_len {
            segs.push(self.segment(start, self.segment_len));
            start += self.segment_len;
        }
        let rest = self.buf.len() - start;
        if last && rest as u64 * 1000 >= MIN_TAIL_MS * u64::from(SAMPLE_RATE) {
            segs.push(self.segment(start, rest));
            start += rest;
        }
        self.buf.drain(..start);
        segs
    }

    fn segment(&mut self, start: usize, len: usize) -> Segment {
        let s = Segment {
            seq: self.seq,
            start_ms: self.emitted * 1000 / u64::from(SAMPLE_RATE),
            end_ms: (self.emitted + len as u64) * 1000 / u64::from(SAMPLE_RATE),
            samples: self.buf[start..start + len].to_vec(),
        };
        self.seq += 1;
        self.emitted += len as u64;
        s
    }
}

/// The format of a streamed WAV (`client.audio_start` with codec `wav`): the live path reads
/// the RIFF header itself and feeds the data chunk to a [`StreamSegmenter`] as raw PCM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WavStreamHeader {
    pub sample_rate: u32,
    pub channels: usize,
    /// Bytes of header before the PCM data.
    pub data_offset: usize,
}

/// Largest header we wait for (fmt, LIST/INFO and other chunks before `data`).
const MAX_WAV_HEADER: usize = 64 * 1024;

impl WavStreamHeader {
    /// Parses the start of a streamed 16-bit PCM WAV. `Ok(None)`: more bytes needed.
    /// Streaming writers put unknown sizes in the RIFF/data lengths; those are ignored.
    pub fn parse(bytes: &[u8]) -> Result<Option<Self>> {
        let bad = |m: &str| Err(SpeechError::Corrupt(format!("wav header: {m}")));
        if bytes.len() < 12 {
            return Ok(None);
        }
        if &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
            return bad("not RIFF/WAVE");
        }
        let mut pos = 12;
        let mut fmt: Option<(u32, usize)> = None;
        loop {
            if pos + 8 > bytes.len() {
                return if pos > MAX_WAV_HEADER {
                    bad("no data chunk")
                } else {
                    Ok(None)
                };
            }
            let id = &bytes[pos..pos + 4];
            let len = u32::from_le_bytes([
                bytes[pos + 4],
                bytes[pos + 5],
                bytes[pos + 6],
                bytes[pos + 7],
            ]) as usize;
            let body = pos + 8;
            if id == b"data" {
                let Some((sample_rate, channels)) = fmt else {
                    return bad("data before fmt");
                };
                return Ok(Some(Self {
                    sample_rate,
                    channels,
                    data_offset: body,
                }));
            }
            if body + len > bytes.len() {
                return if body + len > MAX_WAV_HEADER {
                    bad("oversized chunk before data")
                } else {
                    Ok(None)
                };
            }
            if id == b"fmt " {
                if len < 16 {
                    return bad("short fmt chunk");
                }
                let f = &bytes[body..body + 16];
                let format = u16::from_le_bytes([f[0], f[1]]);
                let channels = usize::from(u16::from_le_bytes([f[2], f[3]]));
                let rate = u32::from_le_bytes([f[4], f[5], f[6], f[7]]);
                let bits = u16::from_le_bytes([f[14], f[15]]);
                // 1 = PCM, 0xFFFE = extensible (its sub-format is PCM for 16-bit writers)
                if !(format == 1 || format == 0xFFFE) || bits != 16 {
                    return Err(SpeechError::Unsupported(format!(
                        "streamed wav must be 16-bit PCM (format {format}, {bits} bits)"
                    )));
                }
                check_params(rate, channels)?;
                fmt = Some((rate, channels));
            }
            // chunks are padded to even lengths
            pos = body + len + (len & 1);
        }
    }
}

fn push_after_delay(buf: &mut Vec<f32>, delay_left: &mut usize, out: &[f32]) {
    let skip = (*delay_left).min(out.len());
    *delay_left -= skip;
    buf.extend_from_slice(&out[skip..]);
}
