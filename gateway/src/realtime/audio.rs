//! The live audio uplink of one socket: after `client.audio_start`, the binary
//! frames are decoded and cut into ~1.5 s segments of 16 kHz mono on a
//! blocking thread (decoding is CPU work and symphonia reads synchronously),
//! and each segment is published on `inside.v1.audio.<sid>.<uid>` as f32le
//! with its seq, stream times, cut time and the server time the stream started (the session's
//! time base) in headers, counted for the report's barrier, and copied to the research subject
//! when the session's members all agreed (see [`ResearchGate`]). When the stream ends
//! (`client.audio_stop`, the socket's end, or a refused chunk) a last segment with no samples
//! says so: the workers' derived analysis then stops waiting for this member's audio, so what
//! the others said last reaches the report without waiting for the member to time out.

use std::cell::Cell;
use std::io::Read;

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use inside_bus::{header_map, Bus};
use inside_engine::speech::{
    decode_stream, AudioLimits, Codec, Segment, SpeechError, StreamSegmenter, WavStreamHeader,
    DEFAULT_SEGMENT_MS,
};
use inside_schemas::audio::now_us;
use inside_schemas::{server_now_ms, AudioSegmentMeta};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::protocol::{self, AudioStart, BadMessage};
use super::research::ResearchGate;
use super::send_queue::{Outbound, SendQueue};
use super::tally::AudioTally;

/// Chunks queued for the decoder before the socket's reader waits (TCP backpressure).
const CHUNK_QUEUE: usize = 64;

/// A running uplink; dropping it (or [`AudioUplink::stop`]) ends the stream, and the decoder
/// publishes the last partial segment.
pub struct AudioUplink {
    chunks: mpsc::Sender<Bytes>,
}

/// Where one member's segments go: the internal subject, the research copy when the session
/// allows it, and nowhere once the member's consent or membership ends (`revoked`).
pub struct AudioRoute {
    pub bus: Bus,
    pub sid: Uuid,
    pub uid: Uuid,
    pub research: ResearchGate,
    pub revoked: CancellationToken,
    /// Counts what is published; the socket's end waits for the stream's last segment.
    pub tally: AudioTally,
}

impl AudioUplink {
    /// Starts the decoder thread for one stream.
    pub fn start(
        route: AudioRoute,
        params: AudioStart,
        max_seconds: f64,
        replies: SendQueue,
    ) -> Self {
        let (chunks, rx) = mpsc::channel(CHUNK_QUEUE);
        let runtime = tokio::runtime::Handle::current();
        let stream_started_ms = u64::try_from(server_now_ms()).ok();
        let AudioRoute {
            bus,
            sid,
            uid,
            research,
            revoked,
            tally,
        } = route;
        tokio::task::spawn_blocking(move || {
            let publisher = SegmentPublisher {
                bus,
                sid,
                uid,
                codec: params.codec,
                runtime,
                research,
                revoked,
                tally,
                stream_started_ms,
                last: Cell::new(None),
            };
            let outcome = decode(rx, params, max_seconds, &publisher);
            if let Err(e) = publisher.end() {
                tracing::debug!(%sid, %uid, error = %e, "the stream's end was not published");
            }
            metrics::counter!("inside_audio_streams_total", "outcome" => if outcome.is_ok() { "ok" } else { "error" }).increment(1);
            if let Err(e) = outcome {
                tracing::info!(%sid, %uid, error = %e, "audio stream refused");
                let bad = match e {
                    SpeechError::TooLarge(m) => BadMessage::AudioTooLarge(m),
                    other => BadMessage::AudioInvalid(other.to_string()),
                };
                let _ = replies.push(Outbound::Text(Utf8Bytes::from(protocol::error(sid, &bad))));
            }
        });
        Self { chunks }
    }

    /// Hands one binary frame to the decoder; `false` when the decoder has stopped (after an
    /// error it already reported).
    pub async fn push(&self, chunk: Bytes) -> bool {
        self.chunks.send(chunk).await.is_ok()
    }
}

struct SegmentPublisher {
    bus: Bus,
    sid: Uuid,
    uid: Uuid,
    codec: Codec,
    runtime: tokio::runtime::Handle,
    research: ResearchGate,
    /// The member's consent or membership ended: the rest of the stream, the last partial
    /// segment included, is dropped.
    revoked: CancellationToken,
    tally: AudioTally,
    stream_started_ms: Option<u64>,
    /// The seq and end of the last segment published.
    last: Cell<Option<(u64, u64)>>,
}

impl SegmentPublisher {
    /// Publishes the stream's end: a segment with no samples after the last one, when any went
    /// out (a worker that never heard of the stream has nothing to end).
    fn end(&self) -> Result<(), SpeechError> {
        let Some((seq, end_ms)) = self.last.get() else {
            return Ok(());
        };
        self.publish(Segment {
            seq: seq.saturating_add(1),
            start_ms: end_ms,
            end_ms,
            samples: Vec::new(),
        })
    }

    fn publish(&self, seg: Segment) -> Result<(), SpeechError> {
        if self.revoked.is_cancelled() {
            return Ok(());
        }
        let meta = AudioSegmentMeta {
            seq: seg.seq,
            start_ms: seg.start_ms,
            end_ms: seg.end_ms,
            codec: self.codec.wire_name().to_string(),
            cut_at_us: now_us(),
            stream_started_ms: self.stream_started_ms,
        };
        let payload: Vec<u8> = seg.samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        let subject = self.bus.subjects().audio(self.sid, self.uid);
        let headers = header_map(meta.to_headers());
        let payload = Bytes::from(payload);
        let sent = self.runtime.block_on(async {
            self.research
                .copy_audio(self.sid, self.uid, &headers, &payload)
                .await;
            self.bus
                .publish_with_headers(subject, headers, payload)
                .await
        });
        match sent {
            Ok(()) => {
                self.last.set(Some((seg.seq, seg.end_ms)));
                self.tally.segment();
                metrics::counter!("inside_audio_segments_published_total").increment(1);
                Ok(())
            }
            Err(e) => Err(SpeechError::Io(std::io::Error::other(format!(
                "publishing an audio segment: {e}"
            )))),
        }
    }
}

/// Runs one stream to its end: raw PCM and WAV are cut directly, compressed containers go
/// through symphonia reading from the chunk queue as a blocking reader.
fn decode(
    mut rx: mpsc::Receiver<Bytes>,
    params: AudioStart,
    max_seconds: f64,
    out: &SegmentPublisher,
) -> Result<(), SpeechError> {
    let mut segmenter: Option<StreamSegmenter> = None;
    match params.codec {
        Codec::PcmS16le => {
            let mut seg = StreamSegmenter::new(
                params.sample_rate,
                params.channels,
                DEFAULT_SEGMENT_MS,
                max_seconds,
            )?;
            while let Some(chunk) = rx.blocking_recv() {
                for s in seg.push_s16le(&chunk)? {
                    out.publish(s)?;
                }
            }
            segmenter = Some(seg);
        }
        Codec::Wav => {
            let mut header = Vec::new();
            while let Some(chunk) = rx.blocking_recv() {
                match segmenter.as_mut() {
                    Some(seg) => {
                        for s in seg.push_s16le(&chunk)? {
                            out.publish(s)?;
                        }
                    }
                    None => {
                        header.extend_from_slice(&chunk);
                        if let Some(h) = WavStreamHeader::parse(&header)? {
                            let mut seg = StreamSegmenter::new(
                                h.sample_rate,
                                h.channels,
                                DEFAULT_SEGMENT_MS,
                                max_seconds,
                            )?;
                            for s in seg.push_s16le(&header[h.data_offset..])? {
                                out.publish(s)?;
                            }
                            segmenter = Some(seg);
                        }
                    }
                }
            }
        }
        Codec::Flac | Codec::Ogg | Codec::Mp3 => {
            let reader = ChunkReader {
                rx,
                current: Bytes::new(),
            };
            let limits = AudioLimits {
                max_bytes: usize::MAX,
                max_seconds,
            };
            let mut on_audio = |interleaved: &[f32], rate: u32, channels: usize| {
                if segmenter.is_none() {
                    segmenter = Some(StreamSegmenter::new(
                        rate,
                        channels,
                        DEFAULT_SEGMENT_MS,
                        max_seconds,
                    )?);
                }
                if let Some(seg) = segmenter.as_mut() {
                    for s in seg.push_f32(interleaved)? {
                        out.publish(s)?;
                    }
                }
                Ok(())
            };
            decode_stream(reader, params.codec, &limits, &mut on_audio)?;
        }
    }
    if let Some(seg) = segmenter.as_mut() {
        for s in seg.finish()? {
            out.publish(s)?;
        }
    }
    Ok(())
}

/// The chunk queue as a blocking `Read`: end of stream when the socket side stops sending.
struct ChunkReader {
    rx: mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}
