//! SpeechBrain's ECAPA-TDNN speaker model (the `spkrec-ecapa-voxceleb` recipe) in candle on
//! CPU, loading SpeechBrain's own `embedding_model.ckpt` (PyTorch pickle) or safetensors, with
//! its config from the `hyperparams.yaml` beside the weights.
//!
//! Speed: BatchNorm is folded into the convolutions at load time, every convolution is one
//! GEMM over the whole batch (frame-major activations, reflect-padded unfold), and the
//! attention's global-context concatenation is never materialised (see `layers`).

mod config;
mod layers;
mod ops;
mod pool_ops;
mod random;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

pub use config::EcapaConfig;
pub use layers::{
    AttentiveStatisticsPooling, PooledHead, Res2NetBlock, SeBlock, SeRes2NetBlock, TdnnBlock,
};
pub use random::{parameter_shapes, random_weights};

use super::error::{Result, SpeechError};
use super::fbank::{Fbank, HOP, N_MELS};

/// ref: speechbrain/lobes/models/ECAPA_TDNN.py `ECAPA_TDNN`: TDNN block, SE-Res2Net blocks,
/// multi-layer feature aggregation (`mfa`), attentive statistics pooling, `asp_bn` + `fc`.
pub struct EcapaTdnn {
    block0: TdnnBlock,
    blocks: Vec<SeRes2NetBlock>,
    mfa: TdnnBlock,
    asp: AttentiveStatisticsPooling,
    head: PooledHead,
}

impl EcapaTdnn {
    pub fn new(cfg: &EcapaConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let (ch, ks, ds) = (&cfg.channels, &cfg.kernel_sizes, &cfg.dilations);
        let n = ch.len();
        let bvb = vb.pp("blocks");
        let block0 = TdnnBlock::new(cfg.input_size, ch[0], ks[0], ds[0], bvb.pp(0))?;
        let blocks = (1..n - 1)
            .map(|i| {
                SeRes2NetBlock::new(
                    ch[i - 1],
                    ch[i],
                    cfg.res2net_scale,
                    cfg.se_channels,
                    ks[i],
                    ds[i],
                    bvb.pp(i),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let mfa = TdnnBlock::new(
            ch[n - 2] * (n - 2),
            ch[n - 1],
            ks[n - 1],
            ds[n - 1],
            vb.pp("mfa"),
        )?;
        let asp = AttentiveStatisticsPooling::new(
            ch[n - 1],
            cfg.attention_channels,
            cfg.global_context,
            vb.pp("asp"),
        )?;
        let head = PooledHead::new(2 * ch[n - 1], cfg.lin_neurons, vb.clone())?;
        Ok(Self {
            block0,
            blocks,
            mfa,
            asp,
            head,
        })
    }

    /// `feats (B·T, input_size)` frame-major, T frames per item → embeddings `(B, lin_neurons)`.
    pub fn forward(&self, feats: &Tensor, frames: usize) -> Result<Tensor> {
        let mut x = self.block0.forward(feats, frames)?;
        let mut outs = Vec::with_capacity(self.blocks.len());
        for block in &self.blocks {
            x = block.forward(&x, frames)?;
            outs.push(x.clone());
        }
        let x = self.mfa.forward(&Tensor::cat(&outs, 1)?, frames)?;
        let pooled = self.asp.forward(&x, frames)?;
        self.head.forward(&pooled)
    }
}

/// The speaker model the service uses: fbank + mean normalisation + ECAPA-TDNN.
/// `Send + Sync`: share one behind an `Arc` across a rayon pool.
pub struct SpeakerModel {
    cfg: EcapaConfig,
    net: EcapaTdnn,
    fbank: Fbank,
}

impl std::fmt::Debug for SpeakerModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpeakerModel")
            .field("cfg", &self.cfg)
            .finish()
    }
}

impl SpeakerModel {
    /// Loads `hyperparams.yaml` (optional: defaults to spkrec-ecapa-voxceleb) and
    /// `embedding_model.safetensors` or `embedding_model.ckpt` from `dir`.
    pub fn load(dir: &Path) -> Result<Self> {
        let yaml = dir.join("hyperparams.yaml");
        let cfg = if yaml.is_file() {
            EcapaConfig::from_yaml(&std::fs::read_to_string(&yaml)?)?
        } else {
            EcapaConfig::default()
        };
        let st = dir.join("embedding_model.safetensors");
        let ckpt = dir.join("embedding_model.ckpt");
        let tensors: HashMap<String, Tensor> = if st.is_file() {
            candle_core::safetensors::load(&st, &Device::Cpu)?
        } else if ckpt.is_file() {
            candle_core::pickle::read_all(&ckpt)?.into_iter().collect()
        } else {
            return Err(SpeechError::ModelMissing(dir.to_path_buf()));
        };
        Self::from_tensors(cfg, tensors)
    }

    /// Builds the model from named tensors (checkpoint keys); extra keys are ignored.
    pub fn from_tensors(cfg: EcapaConfig, tensors: HashMap<String, Tensor>) -> Result<Self> {
        if cfg.input_size != N_MELS {
            return Err(SpeechError::Config(format!(
                "input_size {} but the fbank has {N_MELS} mels",
                cfg.input_size
            )));
        }
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
        let net = EcapaTdnn::new(&cfg, vb)?;
        Ok(Self {
            cfg,
            net,
            fbank: Fbank::new(),
        })
    }

    /// A model with seeded random weights (benchmarks, plumbing tests): not a speaker model.
    pub fn random(cfg: EcapaConfig, seed: u64) -> Result<Self> {
        let tensors = random_weights(&cfg, seed)?;
        Self::from_tensors(cfg, tensors)
    }

    pub fn config(&self) -> &EcapaConfig {
        &self.cfg
    }

    /// 192 for the recipe.
    pub fn embedding_dim(&self) -> usize {
        self.cfg.lin_neurons
    }

    /// Fewest 16 kHz samples `embed` accepts (the reflect padding needs more frames than it pads).
    pub fn min_samples(&self) -> usize {
        self.cfg.max_padding() * HOP + 1
    }

    /// Embedding of one 16 kHz mono recording (SpeechBrain's `encode_batch` on one item).
    pub fn embed(&self, samples: &[f32]) -> Result<Vec<f32>> {
        let mut out = self.embed_batch(&[samples])?;
        out.pop().ok_or(SpeechError::Empty)
    }

    /// Embeddings of several recordings; equal-length ones (the live path's fixed segments) run
    /// as one batch, so each convolution is a single GEMM over all of them.
    pub fn embed_batch(&self, segments: &[&[f32]]) -> Result<Vec<Vec<f32>>> {
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); segments.len()];
        let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
        for (i, s) in segments.iter().enumerate() {
            if s.len() < self.min_samples() {
                return Err(SpeechError::TooShort {
                    got: s.len(),
                    need: self.min_samples(),
                });
            }
            match groups.iter_mut().find(|(len, _)| *len == s.len()) {
                Some((_, idx)) => idx.push(i),
                None => groups.push((s.len(), vec![i])),
            }
        }
        for (len, idx) in groups {
            let frames = Fbank::num_frames(len);
            let mut feats = Vec::with_capacity(idx.len() * frames * N_MELS);
            for &i in &idx {
                feats.extend(self.fbank.features(segments[i]));
            }
            for (i, e) in idx
                .into_iter()
                .zip(self.embed_features_batch(feats, frames)?)
            {
                out[i] = e;
            }
        }
        Ok(out)
    }

    /// The network alone on mean-normalised fbank features: `feats` holds B items of
    /// `frames × 80`, frame-major.
    pub fn embed_features_batch(&self, feats: Vec<f32>, frames: usize) -> Result<Vec<Vec<f32>>> {
        let per_item = frames * self.cfg.input_size;
        if frames <= self.cfg.max_padding()
            || feats.is_empty()
            || !feats.len().is_multiple_of(per_item)
        {
            return Err(SpeechError::TooShort {
                got: frames,
                need: self.cfg.max_padding() + 1,
            });
        }
        let rows = feats.len() / self.cfg.input_size;
        let x = Tensor::from_vec(feats, (rows, self.cfg.input_size), &Device::Cpu)?;
        Ok(self.net.forward(&x, frames)?.to_vec2::<f32>()?)
    }
}

/// Cosine similarity; 0 when either vector is all zeros or the lengths differ.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return 0.0;
    }
    let (mut dot, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (f64::from(*x), f64::from(*y));
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    (dot / (na.sqrt() * nb.sqrt())) as f32
}
