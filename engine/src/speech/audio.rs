//! Audio in: decode WAV, FLAC, Ogg Vorbis and MP3 (symphonia) or raw `pcm_s16le` bytes, downmix
//! to mono and resample to 16 kHz with a band-limited resampler (rubato), within caller bounds.

use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::str::FromStr;

use rubato::{FftFixedIn, Resampler};
use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{DecoderOptions, CODEC_TYPE_NULL};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::{MediaSource, MediaSourceStream, ReadOnlySource};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

use super::error::{Result, SpeechError};

/// The rate everything downstream (VAD, fbank, ECAPA) works at.
pub const SAMPLE_RATE: u32 = 16_000;

/// Highest input rate and channel count accepted: beyond these the input is not a voice recording.
const MAX_RATE: u32 = 384_000;
const MAX_CHANNELS: usize = 32;

/// Frames a decoder may fall short of the header's count before we call the file truncated:
/// encoders pad/trim a few packets (MP3 delay, Vorbis pre-skip), truncation loses far more.
const TRUNCATION_SLACK_FRAMES: u64 = 4096;

/// The caller's bounds on one piece of audio. Checked before and during decoding, so an
/// oversized stream is refused without decoding it whole.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AudioLimits {
    /// Largest encoded input, in bytes.
    pub max_bytes: usize,
    /// Longest decoded audio, in seconds.
    pub max_seconds: f64,
}

impl Default for AudioLimits {
    /// 60 s (the voiceprint maximum) and 32 MiB.
    fn default() -> Self {
        Self {
            max_bytes: 32 << 20,
            max_seconds: 60.0,
        }
    }
}

/// The codecs of `client.audio_start` and of the voiceprint upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    PcmS16le,
    Wav,
    Flac,
    Ogg,
    Mp3,
}

impl Codec {
    /// From a MIME type (`audio/wav`, `audio/x-wav`, `audio/flac`, `audio/ogg`, `audio/mpeg`).
    pub fn from_mime(mime: &str) -> Option<Self> {
        let base = mime
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match base.as_str() {
            "audio/wav" | "audio/x-wav" | "audio/wave" | "audio/vnd.wave" => Some(Self::Wav),
            "audio/flac" | "audio/x-flac" => Some(Self::Flac),
            "audio/ogg" | "audio/vorbis" | "application/ogg" => Some(Self::Ogg),
            "audio/mpeg" | "audio/mp3" => Some(Self::Mp3),
            "audio/l16" | "audio/pcm" => Some(Self::PcmS16le),
            _ => None,
        }
    }

    /// The name `client.audio_start` uses.
    pub fn wire_name(self) -> &'static str {
        match self {
            Self::PcmS16le => "pcm_s16le",
            Self::Wav => "wav",
            Self::Flac => "flac",
            Self::Ogg => "ogg",
            Self::Mp3 => "mp3",
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Self::PcmS16le => "pcm",
            Self::Wav => "wav",
            Self::Flac => "flac",
            Self::Ogg => "ogg",
            Self::Mp3 => "mp3",
        }
    }
}

impl FromStr for Codec {
    type Err = SpeechError;
    /// The wire names of `client.audio_start`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "pcm_s16le" => Ok(Self::PcmS16le),
            "wav" => Ok(Self::Wav),
            "flac" => Ok(Self::Flac),
            "ogg" => Ok(Self::Ogg),
            "mp3" => Ok(Self::Mp3),
            other => Err(SpeechError::Unsupported(format!("codec {other:?}"))),
        }
    }
}

/// Decoded audio: 16 kHz mono f32 in [-1, 1], and what the source was.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedAudio {
    pub samples: Vec<f32>,
    pub source_rate: u32,
    pub source_channels: usize,
}

impl DecodedAudio {
    pub fn seconds(&self) -> f64 {
        self.samples.len() as f64 / f64::from(SAMPLE_RATE)
    }
}

/// Decodes a whole container file (WAV, FLAC, Ogg Vorbis, MP3; `hint` only speeds up probing,
/// the content decides) to 16 kHz mono. Takes the bytes by value: symphonia needs an owned
/// source and an axum `Bytes` converts without a copy.
pub fn decode(data: Vec<u8>, hint: Option<Codec>, limits: &AudioLimits) -> Result<DecodedAudio> {
    if data.len() > limits.max_bytes {
        return Err(SpeechError::TooLarge(format!(
            "{} bytes > {}",
            data.len(),
            limits.max_bytes
        )));
    }
    if data.is_empty() {
        return Err(SpeechError::Empty);
    }
    if hint == Some(Codec::PcmS16le) {
        return Err(SpeechError::InvalidParams(
            "raw pcm_s16le needs its rate and channels: use decode_pcm_s16le".into(),
        ));
    }
    // symphonia is fuzzed but not panic-free on every malformed input; a panic in a decoder
    // must become an error for the one request, not take the process down.
    let (interleaved, rate, channels) =
        catch_unwind(AssertUnwindSafe(|| decode_interleaved(data, hint, limits)))
            .map_err(|_| SpeechError::Corrupt("decoder failed on malformed data".into()))??;
    let mono = downmix(&interleaved, channels);
    let samples = resample_to_16k(&mono, rate)?;
    if samples.is_empty() {
        return Err(SpeechError::Empty);
    }
    Ok(DecodedAudio {
        samples,
        source_rate: rate,
        source_channels: channels,
    })
}

/// Decodes raw little-endian signed 16-bit PCM (interleaved) to 16 kHz mono.
pub fn decode_pcm_s16le(
    data: &[u8],
    sample_rate: u32,
    channels: usize,
    limits: &AudioLimits,
) -> Result<DecodedAudio> {
    check_params(sample_rate, channels)?;
    if data.len() > limits.max_bytes {
        return Err(SpeechError::TooLarge(format!(
            "{} bytes > {}",
            data.len(),
            limits.max_bytes
        )));
    }
    let frame_bytes = 2 * channels;
    if !data.len().is_multiple_of(frame_bytes) {
        return Err(SpeechError::Truncated {
            decoded: (data.len() / frame_bytes) as u64,
            expected: data.len().div_ceil(frame_bytes) as u64,
        });
    }
    let frames = data.len() / frame_bytes;
    check_duration(frames as u64, sample_rate, limits)?;
    let interleaved = s16le_to_f32(data);
    let mono = downmix(&interleaved, channels);
    let samples = resample_to_16k(&mono, sample_rate)?;
    if samples.is_empty() {
        return Err(SpeechError::Empty);
    }
    Ok(DecodedAudio {
        samples,
        source_rate: sample_rate,
        source_channels: channels,
    })
}

/// Little-endian i16 bytes to f32 in [-1, 1) (scale 1/32768, as soundfile and torchaudio do).
/// A trailing odd byte is ignored; callers keep it for the next chunk.
pub fn s16le_to_f32(data: &[u8]) -> Vec<f32> {
    data.chunks_exact(2)
        .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
        .collect()
}

/// Averages interleaved channels into one.
pub fn downmix(interleaved: &[f32], channels: usize) -> Vec<f32> {
    if channels <= 1 {
        return interleaved.to_vec();
    }
    let scale = 1.0 / channels as f32;
    interleaved
        .chunks_exact(channels)
        .map(|f| f.iter().sum::<f32>() * scale)
        .collect()
}

/// Band-limited resampling of mono audio to 16 kHz; the resampler's delay is removed so sample
/// `i` of the output is time `i / 16000` of the input, and the length is `ceil(n * 16000 / rate)`.
pub fn resample_to_16k(mono: &[f32], rate: u32) -> Result<Vec<f32>> {
    check_params(rate, 1)?;
    if rate == SAMPLE_RATE || mono.is_empty() {
        return Ok(mono.to_vec());
    }
    let err = |e: &dyn std::fmt::Display| SpeechError::Resample(e.to_string());
    let mut rs = FftFixedIn::<f32>::new(rate as usize, SAMPLE_RATE as usize, 1024, 2, 1)
        .map_err(|e| err(&e))?;
    let delay = rs.output_delay();
    let want = (mono.len() as u64 * u64::from(SAMPLE_RATE)).div_ceil(u64::from(rate)) as usize;
    let mut out = Vec::with_capacity(want + delay + 2048);
    let mut pos = 0;
    while mono.len() - pos >= rs.input_frames_next() {
        let n = rs.input_frames_next();
        let o = rs
            .process(&[&mono[pos..pos + n]], None)
            .map_err(|e| err(&e))?;
        out.extend_from_slice(&o[0]);
        pos += n;
    }
    if pos < mono.len() {
        let o = rs
            .process_partial(Some(&[&mono[pos..]]), None)
            .map_err(|e| err(&e))?;
        out.extend_from_slice(&o[0]);
    }
    // flush the resampler's delay line with silence
    while out.len() < want + delay {
        let o = rs
            .process_partial::<&[f32]>(None, None)
            .map_err(|e| err(&e))?;
        if o[0].is_empty() {
            break;
        }
        out.extend_from_slice(&o[0]);
    }
    out.drain(..delay.min(out.len()));
    out.truncate(want);
    Ok(out)
}

pub(crate) fn check_params(rate: u32, channels: usize) -> Result<()> {
    if rate == 0 || rate > MAX_RATE {
        return Err(SpeechError::InvalidParams(format!("sample rate {rate} Hz")));
    }
    if channels == 0 || channels > MAX_CHANNELS {
        return Err(SpeechError::InvalidParams(format!("{channels} channels")));
    }
    Ok(())
}

fn check_duration(frames: u64, rate: u32, limits: &AudioLimits) -> Result<()> {
    let secs = frames as f64 / f64::from(rate);
    if secs > limits.max_seconds {
        return Err(SpeechError::TooLarge(format!(
            "{secs:.1} s > {:.1} s",
            limits.max_seconds
        )));
    }
    Ok(())
}

/// symphonia's part: interleaved f32 at the source rate, the rate and the channel count.
fn decode_interleaved(
    data: Vec<u8>,
    hint: Option<Codec>,
    limits: &AudioLimits,
) -> Result<(Vec<f32>, u32, usize)> {
    let mut out: Vec<f32> = Vec::new();
    let (rate, channels) = decode_source(
        Box::new(Cursor::new(data)),
        hint,
        limits,
        &mut |samples, _, _| {
            out.extend_from_slice(samples);
            Ok(())
        },
    )?;
    Ok((out, rate, channels))
}

/// Receives each decoded packet: interleaved samples, sample rate, channel count.
pub type PacketSink<'a> = dyn FnMut(&[f32], u32, usize) -> Result<()> + 'a;

/// Decodes a container read incrementally from `reader` (the live path: a blocking reader fed
/// by the WebSocket), handing each decoded packet to `on_audio(interleaved, rate, channels)` as
/// soon as it is decoded. Returns at the end of the stream; a decoder panic becomes `Corrupt`.
pub fn decode_stream<R: std::io::Read + Send + Sync + 'static>(
    reader: R,
    hint: Codec,
    limits: &AudioLimits,
    on_audio: &mut PacketSink<'_>,
) -> Result<(u32, usize)> {
    let source = Box::new(ReadOnlySource::new(reader));
    catch_unwind(AssertUnwindSafe(|| {
        decode_source(source, Some(hint), limits, on_audio)
    }))
    .map_err(|_| SpeechError::Corrupt("decoder failed on malformed data".into()))?
}

/// The one symphonia decode loop, over any source; returns the rate and channel count.
fn decode_source(
    source: Box<dyn MediaSource>,
    hint: Option<Codec>,
    limits: &AudioLimits,
    on_audio: &mut PacketSink<'_>,
) -> Result<(u32, usize)> {
    let mss = MediaSourceStream::new(source, Default::default());
    let mut h = Hint::new();
    if let Some(c) = hint {
        h.with_extension(c.extension());
    }
    let probed = symphonia::default::get_probe()
        .format(
            &h,
            mss,
            &FormatOptions::default(),
            &MetadataOptions::default(),
        )
        .map_err(|e| match e {
            SymError::Unsupported(m) => SpeechError::Unsupported(m.to_string()),
            other => SpeechError::Corrupt(other.to_string()),
        })?;
    let mut format = probed.format;
    let track = format
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .ok_or_else(|| SpeechError::Unsupported("no audio track".into()))?;
    let track_id = track.id;
    let params = track.codec_params.clone();
    let mut decoder = symphonia::default::get_codecs()
        .make(&params, &DecoderOptions { verify: true })
        .map_err(|e| SpeechError::Unsupported(e.to_string()))?;

    let mut rate = params.sample_rate.unwrap_or(0);
    let mut channels = params.channels.map(|c| c.count()).unwrap_or(0);
    if rate != 0 && channels != 0 {
        check_params(rate, channels)?;
        if let Some(n) = params.n_frames {
            check_duration(n, rate, limits)?;
        }
    }
    let mut frames: u64 = 0;
    let mut buf: Option<SampleBuffer<f32>> = None;
    loop {
        let packet = match format.next_packet() {
            Ok(p) => p,
            // symphonia signals the end of the stream with UnexpectedEof
            Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(SymError::ResetRequired) => break,
            Err(e) => return Err(SpeechError::Corrupt(e.to_string())),
        };
        if packet.track_id() != track_id {
            continue;
        }
        let decoded = match decoder.decode(&packet) {
            Ok(d) => d,
            Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(SpeechError::Corrupt(e.to_string())),
        };
        let spec = *decoded.spec();
        if rate == 0 || channels == 0 {
            rate = spec.rate;
            channels = spec.channels.count();
            check_params(rate, channels)?;
        }
        if spec.rate != rate || spec.channels.count() != channels {
            return Err(SpeechError::Corrupt(
                "sample rate or channels change mid-stream".into(),
            ));
        }
        let n = decoded.frames() as u64;
        frames += n;
        check_duration(frames, rate, limits)?;
        let sb = match &mut buf {
            Some(b) if b.capacity() >= decoded.capacity() * channels => b,
            _ => buf.insert(SampleBuffer::new(decoded.capacity() as u64, spec)),
        };
        sb.copy_interleaved_ref(decoded);
        on_audio(sb.samples(), rate, channels)?;
    }
    if let Some(expected) = params.n_frames {
        if frames + TRUNCATION_SLACK_FRAMES < expected {
            return Err(SpeechError::Truncated {
                decoded: frames,
                expected,
            });
        }
    }
    // FLAC carries an MD5 of the whole decoded stream: damage that still decodes shows here
    if decoder.finalize().verify_ok == Some(false) {
        return Err(SpeechError::Corrupt(
            "decoded audio fails the stream checksum".into(),
        ));
    }
    if frames == 0 || rate == 0 || channels == 0 {
        return Err(SpeechError::Empty);
    }
    Ok((rate, channels))
}
