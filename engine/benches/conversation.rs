//! Criterion bench of the derived conversation features, single-threaded: speaking rate,
//! voice activity, overlap and turns (`ConversationAnalyzer`) over both member streams of the
//! `turns` dialogue fixture (19.5 s each), fed in 20 ms chunks as the live path would.
//!
//! Run: `cargo bench -p inside-engine --bench conversation`. Besides criterion's time per
//! pass it prints how many times real time one core runs the extraction (audio seconds of all
//! streams per second of compute).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use inside_engine::conversation::{ConversationAnalyzer, ConversationConfig};
use inside_engine::speech::{decode, AudioLimits, Codec, SAMPLE_RATE};

const CHUNK: usize = 320;

fn stream(file: &str) -> Vec<f32> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/dialogues")
        .join(file);
    let bytes = std::fs::read(path).unwrap();
    decode(bytes, Some(Codec::Flac), &AudioLimits::default())
        .unwrap()
        .samples
}

/// One pass: both streams through a fresh analyzer, interleaved chunk by chunk.
fn run(a: &[f32], b: &[f32]) -> usize {
    let mut an = ConversationAnalyzer::new(2, ConversationConfig::default()).unwrap();
    let mut hops = 0;
    for (ca, cb) in a.chunks(CHUNK).zip(b.chunks(CHUNK)) {
        hops += an.push(0, ca).unwrap().len();
        hops += an.push(1, cb).unwrap().len();
    }
    hops
}

fn bench(c: &mut Criterion) {
    let a = stream("turns.a.flac");
    let b = stream("turns.b.flac");
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let audio_s = 2.0 * n as f64 / f64::from(SAMPLE_RATE);

    // A plain timing, for the "× real time per core" figure.
    let passes = 20;
    let t = Instant::now();
    for _ in 0..passes {
        black_box(run(black_box(a), black_box(b)));
    }
    let per_pass = t.elapsed().as_secs_f64() / f64::from(passes);
    eprintln!(
        "conversation bench: {audio_s:.1} s of audio (2 streams) in {:.2} ms: {:.0}x real time \
         on one core",
        per_pass * 1000.0,
        audio_s / per_pass
    );

    let mut g = c.benchmark_group("conversation");
    g.throughput(Throughput::Elements(2 * n as u64));
    g.bench_function("rate+activity+overlap+turns, 2 streams of 19.5 s", |bch| {
        bch.iter(|| run(black_box(a), black_box(b)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
