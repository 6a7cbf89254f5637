//! `worker embed` as a process: its model folder comes from ECAPA_MODEL_DIR when no
//! `--model-dir` is given, and a missing model ends it with exit code 2 and a message naming
//! the folder and how to obtain the model.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

fn fixture() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../engine/tests/fixtures/ecapa_small")
}

/// `worker embed <args>` in an empty folder (no `.env` or `inside.toml` leaks in).
fn embed(args: &[&str], env: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_worker"))
        .arg("embed")
        .args(args)
        .current_dir(dir.path())
        .env_remove("ECAPA_MODEL_DIR")
        .envs(env.iter().copied())
        .output()
        .expect("the worker binary runs")
}

#[test]
fn a_missing_model_exits_2_naming_the_folder_and_how_to_get_it() {
    let empty = tempfile::tempdir().unwrap();
    let empty_dir = empty.path().to_str().unwrap();
    let wav = fixture().join("input.wav");
    let out = embed(&[wav.to_str().unwrap()], &[("ECAPA_MODEL_DIR", empty_dir)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(out.stdout.is_empty());
    for needle in [
        empty_dir,
        "embedding_model.ckpt",
        "speechbrain/spkrec-ecapa-voxceleb",
        "README.md",
    ] {
        assert!(stderr.contains(needle), "{needle:?} not in: {stderr}");
    }

    // no folder at all: the same exit code, naming the setting
    let out = embed(&[wav.to_str().unwrap()], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("ECAPA_MODEL_DIR"), "{stderr}");
}

#[test]
fn the_model_folder_defaults_to_ecapa_model_dir() {
    let dir = fixture();
    let wav = dir.join("input.wav");
    let out = embed(
        &[wav.to_str().unwrap()],
        &[("ECAPA_MODEL_DIR", dir.to_str().unwrap())],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["embedding"].as_array().unwrap().len(), 192);
}
