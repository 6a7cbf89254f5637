//! Parity of our fbank and ECAPA-TDNN with SpeechBrain itself, on the fixture that
//! `scripts/make_ecapa_fixture.py` wrote with SpeechBrain (reduced channels, seeded random
//! weights, randomised BatchNorm statistics). No Python is needed here.
//!
//! Tolerances (documented in the README):
//! - fbank: max |Δ| ≤ 2e-3 dB on values spanning ~80 dB (f32 FFT vs torch's, log10 rounding);
//! - embedding: cosine ≥ 0.9999 and max |Δ| ≤ 1e-3 · max |e| (f32 GEMMs in another order).
//!
//! With `ECAPA_FULL_DIR` set to a directory written by the script's `--full`, the same checks
//! run on the full 1024-channel configuration.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use inside_engine::speech::{cosine, decode, AudioLimits, Fbank, SpeakerModel};

const FBANK_TOL_DB: f32 = 2e-3;
const EMB_COSINE_MIN: f32 = 0.9999;
const EMB_REL_TOL: f32 = 1e-3;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ecapa_small")
}

fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn expected(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("embedding.json")).unwrap()).unwrap()
}

fn as_vec(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn input(dir: &Path) -> Vec<f32> {
    let bytes = std::fs::read(dir.join("input.wav")).unwrap();
    decode(bytes, None, &AudioLimits::default())
        .unwrap()
        .samples
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn check_embedding(name: &str, got: &[f32], want: &[f32]) {
    let cos = cosine(got, want);
    let diff = max_abs_diff(got, want);
    let scale = want.iter().map(|x| x.abs()).fold(0.0, f32::max);
    eprintln!(
        "{name}: cosine {cos:.8} (1 - cos = {:.1e}), max |diff| {diff:.3e} (max |e| {scale:.3})",
        1.0 - f64::from(cos)
    );
    assert!(cos >= EMB_COSINE_MIN, "{name}: cosine {cos}");
    assert!(
        diff <= EMB_REL_TOL * scale,
        "{name}: max |diff| {diff} > {}",
        EMB_REL_TOL * scale
    );
}

fn check_dir(dir: &Path) {
    let exp = expected(dir);
    let samples = input(dir);
    assert_eq!(samples.len() as u64, exp["samples"].as_u64().unwrap());
    let frames = exp["frames"].as_u64().unwrap() as usize;

    let fb = Fbank::new();
    let ours = fb.compute(&samples);
    let theirs = read_f32(&dir.join("fbank.f32"));
    assert_eq!(ours.len(), frames * 80);
    let d = max_abs_diff(&ours, &theirs);
    eprintln!("fbank: max |diff| {d:.3e} dB over {frames} frames");
    assert!(d <= FBANK_TOL_DB, "fbank max |diff| {d}");
    let feats = fb.features(&samples);
    let theirs_feats = read_f32(&dir.join("feats.f32"));
    let d = max_abs_diff(&feats, &theirs_feats);
    eprintln!("normalised feats: max |diff| {d:.3e}");
    assert!(d <= FBANK_TOL_DB, "feats max |diff| {d}");

    let model = SpeakerModel::load(dir).unwrap();
    let want = as_vec(&exp["embedding"]);
    // the network alone, on SpeechBrain's own features
    let from_feats = model.embed_features_batch(theirs_feats, frames).unwrap();
    check_embedding("network on SpeechBrain feats", &from_feats[0], &want);
    // end to end from the decoded wav
    let got = model.embed(&samples).unwrap();
    check_embedding("end to end", &got, &want);
    // a 1.5 s live-length segment
    let short = model.embed(&samples[..24_000]).unwrap();
    check_embedding(
        "1.5 s segment",
        &short,
        &as_vec(&exp["embedding_short_1_5s"]),
    );
    // batching must not change anything
    let batch = model
        .embed_batch(&[&samples[..24_000], &samples, &samples[..24_000]])
        .unwrap();
    assert!(
        max_abs_diff(&batch[0], &short) < 1e-4 * short.iter().map(|x| x.abs()).fold(0.0, f32::max)
    );
    assert!(
        max_abs_diff(&batch[2], &short) < 1e-4 * short.iter().map(|x| x.abs()).fold(0.0, f32::max)
    );
    assert!(cosine(&batch[1], &got) > 0.999_999);
}

#[test]
fn small_config_matches_speechbrain() {
    check_dir(&fixture_dir());
}

#[test]
fn full_config_matches_speechbrain_when_available() {
    let Some(dir) = std::env::var_os("ECAPA_FULL_DIR") else {
        eprintln!("ECAPA_FULL_DIR not set: full-size parity skipped");
        return;
    };
    check_dir(Path::new(&dir));
}

#[test]
fn model_dir_errors_are_clear() {
    let err = SpeakerModel::load(Path::new("/nonexistent-model-dir")).unwrap_err();
    assert!(err.to_string().contains("no model weights"), "{err}");
    let model = SpeakerModel::load(&fixture_dir()).unwrap();
    assert_eq!(model.embedding_dim(), 192);
    assert!(model.embed(&[0.0; 100]).is_err());
    assert!(model.embed(&[]).is_err());
}

#[test]
fn parameter_names_are_the_checkpoint_keys() {
    use inside_engine::speech::ecapa::parameter_shapes;
    let dir = fixture_dir();
    let cfg = inside_engine::speech::EcapaConfig::from_yaml(
        &std::fs::read_to_string(dir.join("hyperparams.yaml")).unwrap(),
    )
    .unwrap();
    let mut ckpt: Vec<(String, Vec<usize>)> =
        candle_core::pickle::read_all(dir.join("embedding_model.ckpt"))
            .unwrap()
            .into_iter()
            .filter(|(k, _)| !k.ends_with("num_batches_tracked"))
            .map(|(k, t)| (k, t.dims().to_vec()))
            .collect();
    let mut ours = parameter_shapes(&cfg);
    ckpt.sort();
    ours.sort();
    assert_eq!(ours, ckpt);
}

#[test]
fn random_model_embeds_and_batches() {
    let cfg = inside_engine::speech::EcapaConfig {
        channels: vec![32, 32, 32, 32, 96],
        attention_channels: 8,
        se_channels: 8,
        ..Default::default()
    };
    let model = SpeakerModel::random(cfg, 1).unwrap();
    let a: Vec<f32> = (0..16_000)
        .map(|i| ((i as f32) * 0.05).sin() * 0.2)
        .collect();
    let b: Vec<f32> = (0..20_000)
        .map(|i| ((i as f32) * 0.11).sin() * 0.2)
        .collect();
    let e = model.embed_batch(&[&a, &b, &a]).unwrap();
    assert_eq!(e.len(), 3);
    assert!(e
        .iter()
        .all(|v| v.len() == 192 && v.iter().all(|x| x.is_finite())));
    assert!(cosine(&e[0], &e[2]) > 0.999_999);
    assert!(cosine(&e[0], &model.embed(&a).unwrap()) > 0.999_999);
}

#[test]
fn models_are_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SpeakerModel>();
    assert_send_sync::<Fbank>();
    assert_send_sync::<inside_engine::speech::Vad>();
}

#[test]
fn enrolment_bounds_and_quality() {
    use inside_engine::speech::{enrol, Vad};
    let model = SpeakerModel::load(&fixture_dir()).unwrap();
    let vad = Vad::default();
    let samples = input(&fixture_dir());
    let short = enrol(&model, &vad, &samples[..16_000]);
    assert!(short.is_err());
    let mut four = samples.clone();
    four.extend_from_slice(&samples[..16_000]);
    let vp = enrol(&model, &vad, &four).unwrap();
    assert_eq!(vp.embedding.len(), 192);
    assert!((vp.seconds - 4.0).abs() < 1e-3);
    assert!((0.0..=1.0).contains(&vp.quality));
    let silent = enrol(&model, &vad, &vec![0.0; 64_000]).unwrap();
    assert_eq!(silent.quality, 0.0);
}
