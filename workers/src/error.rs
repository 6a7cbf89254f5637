//! The worker crate's errors that its callers tell apart: the CLI exits with 2 on a speaker
//! model it cannot find, with a message saying where it looked and how to get one.

use std::path::PathBuf;

/// How to obtain the model, the same words wherever the model is missing.
pub const MODEL_HOWTO: &str = "download embedding_model.ckpt and hyperparams.yaml of SpeechBrain's \
     speechbrain/spkrec-ecapa-voxceleb into a folder and set ECAPA_MODEL_DIR (or --model-dir) to it; \
     README.md, \"Speaker model\", explains";

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Neither `--model-dir` nor `ECAPA_MODEL_DIR` names a folder.
    #[error("no speaker model folder: pass --model-dir or set ECAPA_MODEL_DIR ({MODEL_HOWTO})")]
    ModelDirUnset,
    /// The folder has no model weights (or does not exist).
    #[error(
        "no speaker model in {}: expected embedding_model.ckpt (or embedding_model.safetensors) \
         and hyperparams.yaml there ({MODEL_HOWTO})",
        .0.display()
    )]
    ModelMissing(PathBuf),
}
