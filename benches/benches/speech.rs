//! Criterion benchmarks of the speech path, single-threaded: fbank on 3 s of 16 kHz audio and
//! one ECAPA-TDNN embedding of 3 s with the full 1024-channel configuration.
//!
//! Weights: `ECAPA_BENCH_DIR` (default /var/tmp/ecapa_full, written by
//! `scripts/make_ecapa_fixture.py --full /var/tmp/ecapa_full`), else seeded random weights made
//! here, so the bench runs on a clean machine. Compare with `benches/speechbrain_compare.py`.
//!
//! Run: `RAYON_NUM_THREADS=1 cargo bench -p inside-benches --bench speech`

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion};
use inside_engine::speech::{EcapaConfig, Fbank, SpeakerModel};

/// A deterministic 3 s voice-like test signal (harmonics of a gliding pitch, plus hiss).
fn signal(seconds: f32) -> Vec<f32> {
    let n = (seconds * 16_000.0) as usize;
    let mut phase = 0.0f32;
    let mut seed = 12345u32;
    (0..n)
        .map(|i| {
            let t = i as f32 / 16_000.0;
            phase += 2.0 * std::f32::consts::PI * (140.0 + 40.0 * (4.4 * t).sin()) / 16_000.0;
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let noise = (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
            (1..12)
                .map(|k| (k as f32 * phase).sin() / k as f32)
                .sum::<f32>()
                * 0.2
                + 0.01 * noise
        })
        .collect()
}

fn full_model() -> SpeakerModel {
    let dir = std::env::var_os("ECAPA_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/ecapa_full"));
    match SpeakerModel::load(&dir) {
        Ok(m) if m.config() == &EcapaConfig::default() => {
            eprintln!("speech bench: weights from {}", dir.display());
            m
        }
        _ => {
            eprintln!(
                "speech bench: no full-size weights in {}, using random ones",
                dir.display()
            );
            match SpeakerModel::random(EcapaConfig::default(), 7) {
                Ok(m) => m,
                Err(e) => panic!("random model: {e}"),
            }
        }
    }
}

fn bench(c: &mut Criterion) {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        // candle's GEMM reads this on every call: the figures are single-thread figures
        std::env::set_var("RAYON_NUM_THREADS", "1");
    }
    let audio = signal(3.0);
    let fbank = Fbank::new();
    c.bench_function("fbank_3s", |b| {
        b.iter(|| black_box(fbank.compute(black_box(&audio))))
    });

    let model = full_model();
    let mut g = c.benchmark_group("ecapa_full");
    g.sample_size(20);
    g.bench_function("embed_3s", |b| {
        b.iter(|| black_box(model.embed(black_box(&audio))))
    });
    let feats = fbank.features(&audio);
    let frames = Fbank::num_frames(audio.len());
    g.bench_function("network_only_3s", |b| {
        b.iter(|| black_box(model.embed_features_batch(feats.clone(), frames)))
    });
    let seg = &audio[..24_000];
    let batch: Vec<&[f32]> = vec![seg; 8];
    g.bench_function("embed_batch_8x1.5s", |b| {
        b.iter(|| black_box(model.embed_batch(black_box(&batch))))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
