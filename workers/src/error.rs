//! The worker crate's errors, each naming what failed: the CLI exits with 2 on a speaker
//! model it cannot find, with a message saying where it looked and how to get one; a report
//! job that fails is retried and, in the end, recorded with this message as its reason.

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
    #[error("loading the speaker model from {}: {source}", .dir.display())]
    ModelLoad {
        dir: PathBuf,
        #[source]
        source: Box<inside_engine::speech::SpeechError>,
    },
    /// A file the CLI was given could not be decoded or embedded.
    #[error("{step} {}: {source}", .path.display())]
    Audio {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: Box<inside_engine::speech::SpeechError>,
    },
    /// Wrong arguments to a CLI command.
    #[error("{0}")]
    Usage(String),
    #[error("{step}: {source}")]
    Io {
        step: String,
        #[source]
        source: std::io::Error,
    },
    // boxed: the store's and the bus's errors are large, and every Result here carries them
    #[error(transparent)]
    Store(Box<inside_store::StoreError>),
    #[error(transparent)]
    Bus(Box<inside_bus::BusError>),
    /// The JetStream report consumer could not be made or read.
    #[error("{step}: {message}")]
    Jobs { step: &'static str, message: String },
    #[error("the report builder stopped: {0}")]
    Join(#[from] tokio::task::JoinError),
}

impl From<inside_store::StoreError> for WorkerError {
    fn from(e: inside_store::StoreError) -> Self {
        WorkerError::Store(Box::new(e))
    }
}

impl From<inside_bus::BusError> for WorkerError {
    fn from(e: inside_bus::BusError) -> Self {
        WorkerError::Bus(Box::new(e))
    }
}

impl WorkerError {
    /// True when the speaker model is not where it was looked for (the CLI exits with 2).
    pub fn is_model_missing(&self) -> bool {
        matches!(
            self,
            WorkerError::ModelDirUnset | WorkerError::ModelMissing(_)
        )
    }

    pub(crate) fn io(step: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let step = step.into();
        move |source| WorkerError::Io { step, source }
    }
}
