//! `worker embed`: the researchers' CLI around the speaker model. One JSON line per file with
//! its 192-d ECAPA-TDNN embedding, or with `--compare A B` the cosine score of two files, so
//! embeddings can be checked against SpeechBrain's or scored offline. The model folder is
//! `--model-dir`, else `ECAPA_MODEL_DIR`; a missing model is a [`WorkerError`] saying how to
//! get it.

use std::io::Write;
use std::path::{Path, PathBuf};

use inside_engine::speech::{cosine, decode, AudioLimits, Codec, SpeakerModel, SpeechError};

use crate::WorkerError;

/// Recordings up to ten minutes: this is an offline tool, not the live path.
const CLI_LIMITS: AudioLimits = AudioLimits {
    max_bytes: 512 << 20,
    max_seconds: 600.0,
};

/// The model folder: `--model-dir` when given, else the settings' `ECAPA_MODEL_DIR`.
pub fn model_dir(
    given: Option<PathBuf>,
    ecapa_model_dir: Option<&Path>,
) -> Result<PathBuf, WorkerError> {
    given
        .or_else(|| ecapa_model_dir.map(Path::to_path_buf))
        .ok_or(WorkerError::ModelDirUnset)
}

/// Loads the model from `dir`; no weights there is [`WorkerError::ModelMissing`].
pub fn load_model(dir: &Path) -> Result<SpeakerModel, WorkerError> {
    match SpeakerModel::load(dir) {
        Ok(model) => Ok(model),
        Err(SpeechError::ModelMissing(_)) => Err(WorkerError::ModelMissing(dir.to_path_buf())),
        Err(source) => Err(WorkerError::ModelLoad {
            dir: dir.to_path_buf(),
            source: Box::new(source),
        }),
    }
}

/// Prints to stdout: `{"file": …, "embedding": [..]}` per file, or with `compare` and exactly
/// two files `{"a": …, "b": …, "cosine": …}`.
pub fn run_embed(model_dir: &Path, files: &[PathBuf], compare: bool) -> Result<(), WorkerError> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    run_embed_to(model_dir, files, compare, &mut out)
}

/// `run_embed` writing to any sink (tests).
pub fn run_embed_to(
    model_dir: &Path,
    files: &[PathBuf],
    compare: bool,
    out: &mut impl Write,
) -> Result<(), WorkerError> {
    if compare && files.len() != 2 {
        return Err(WorkerError::Usage(format!(
            "--compare takes exactly two files, got {}",
            files.len()
        )));
    }
    if files.is_empty() {
        return Err(WorkerError::Usage("no audio files given".into()));
    }
    let model = load_model(model_dir)?;
    let mut embeddings = Vec::with_capacity(files.len());
    for file in files {
        let e = embed_file(&model, file)?;
        if !compare {
            let line = serde_json::json!({ "file": file.display().to_string(), "embedding": e });
            writeln!(out, "{line}").map_err(WorkerError::io("writing the output"))?;
        }
        embeddings.push(e);
    }
    if compare {
        let line = serde_json::json!({
            "a": files[0].display().to_string(),
            "b": files[1].display().to_string(),
            "cosine": cosine(&embeddings[0], &embeddings[1]),
        });
        writeln!(out, "{line}").map_err(WorkerError::io("writing the output"))?;
    }
    out.flush().map_err(WorkerError::io("writing the output"))?;
    Ok(())
}

/// Decodes (WAV, FLAC, Ogg Vorbis, MP3; 16 kHz mono after resampling) and embeds one file.
pub fn embed_file(model: &SpeakerModel, path: &Path) -> Result<Vec<f32>, WorkerError> {
    let bytes =
        std::fs::read(path).map_err(WorkerError::io(format!("reading {}", path.display())))?;
    let hint = path
        .extension()
        .and_then(|e| e.to_str())
        .and_then(|e| e.to_ascii_lowercase().parse::<Codec>().ok())
        .filter(|c| *c != Codec::PcmS16le);
    let failed = |step| {
        move |source| WorkerError::Audio {
            step,
            path: path.to_path_buf(),
            source: Box::new(source),
        }
    };
    let audio = decode(bytes, hint, &CLI_LIMITS).map_err(failed("decoding"))?;
    model.embed(&audio.samples).map_err(failed("embedding"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn fixture() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../engine/tests/fixtures/ecapa_small")
    }

    #[test]
    fn prints_embeddings_and_cosines() {
        let dir = fixture();
        let wav = dir.join("input.wav");
        let mut buf = Vec::new();
        run_embed_to(&dir, &[wav.clone(), wav.clone()], false, &mut buf).unwrap();
        let lines: Vec<serde_json::Value> = String::from_utf8(buf)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["embedding"].as_array().unwrap().len(), 192);
        // the fixture's SpeechBrain embedding of the same file
        let exp: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("embedding.json")).unwrap())
                .unwrap();
        let to_vec = |v: &serde_json::Value| -> Vec<f32> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        };
        assert!(cosine(&to_vec(&lines[0]["embedding"]), &to_vec(&exp["embedding"])) > 0.9999);

        let mut buf = Vec::new();
        run_embed_to(&dir, &[wav.clone(), wav.clone()], true, &mut buf).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert!((v["cosine"].as_f64().unwrap() - 1.0).abs() < 1e-6);
        assert!(run_embed_to(&dir, &[wav], true, &mut Vec::new()).is_err());
    }

    #[test]
    fn a_missing_model_names_the_folder_and_how_to_get_it() {
        let empty = tempfile::tempdir().unwrap();
        let wav = fixture().join("input.wav");
        let err = run_embed_to(empty.path(), &[wav], false, &mut Vec::new()).unwrap_err();
        assert!(matches!(
            &err,
            WorkerError::ModelMissing(d) if d == empty.path()
        ));
        let message = err.to_string();
        let folder = empty.path().display().to_string();
        for needle in [
            folder.as_str(),
            "embedding_model.ckpt",
            "speechbrain/spkrec-ecapa-voxceleb",
            "ECAPA_MODEL_DIR",
            "README.md",
        ] {
            assert!(message.contains(needle), "{needle:?} not in: {message}");
        }
    }

    #[test]
    fn the_model_folder_is_the_flag_else_the_setting() {
        let flag = PathBuf::from("/from/flag");
        let setting = Path::new("/from/setting");
        assert_eq!(model_dir(Some(flag.clone()), Some(setting)).unwrap(), flag);
        assert_eq!(model_dir(None, Some(setting)).unwrap(), setting);
        let unset = model_dir(None, None).unwrap_err();
        assert!(matches!(unset, WorkerError::ModelDirUnset));
        assert!(unset.to_string().contains("ECAPA_MODEL_DIR"), "{unset}");
    }
}
