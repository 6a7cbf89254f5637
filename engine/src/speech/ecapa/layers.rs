//! ECAPA-TDNN's layers, one struct per SpeechBrain module, with BatchNorm folded at load time.
//!
//! Activations are frame-major `(B·T, C)` tensors (see `ops`); `frames` is T. VarBuilder paths
//! are the checkpoint keys (`blocks.0.conv.conv.weight`, `blocks.1.se_block.conv1.conv.bias`,
//! `asp_bn.norm.running_var`, …).

use candle_core::{DType, Tensor, D};
use candle_nn::VarBuilder;

use super::ops::{BiasReluAffine, ReflectUnfold};
use super::pool_ops::{AttentiveStats, MeanStd, TimeMean};
use crate::speech::error::Result;

/// SpeechBrain's BatchNorm1d eps (ref: speechbrain/nnet/normalization.py `BatchNorm1d`).
const BN_EPS: f64 = 1e-5;

/// Eval-mode BatchNorm as `y = s·x + t` (running statistics).
fn batch_norm_affine(vb: &VarBuilder, n: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let v = |name| -> Result<Vec<f32>> { Ok(vb.get(n, name)?.to_vec1::<f32>()?) };
    let (gamma, beta, mean, var) = (
        v("weight")?,
        v("bias")?,
        v("running_mean")?,
        v("running_var")?,
    );
    let s: Vec<f64> = gamma
        .iter()
        .zip(&var)
        .map(|(g, v)| f64::from(*g) / (f64::from(*v) + BN_EPS).sqrt())
        .collect();
    let t = beta
        .iter()
        .zip(&mean)
        .zip(&s)
        .map(|((b, m), s)| f64::from(*b) - f64::from(*m) * s)
        .collect();
    Ok((s, t))
}

/// A torch Conv1d weight `(out, in, k)` scaled per output channel, as the GEMM operand
/// `(k·in, out)` whose row `j·in + c` is tap j of input channel c (the unfold's column order).
fn gemm_weight(w: &Tensor, out_scale: Option<&[f64]>) -> Result<Tensor> {
    let (cout, cin, k) = w.dims3()?;
    let w = match out_scale {
        Some(s) => {
            let s: Vec<f32> = s.iter().map(|x| *x as f32).collect();
            w.broadcast_mul(&Tensor::from_vec(s, (cout, 1, 1), w.device())?)?
        }
        None => w.clone(),
    };
    Ok(w.permute((2, 1, 0))?
        .contiguous()?
        .reshape((k * cin, cout))?)
}

/// A plain SpeechBrain `Conv1d` with kernel 1 as `x @ W + b` (SE convs, shortcut, attention).
pub struct Conv1x1 {
    w: Tensor,
    b: Tensor,
}

impl Conv1x1 {
    /// ref: speechbrain/nnet/CNN.py `Conv1d` (kernel_size=1: no padding).
    pub fn new(cin: usize, cout: usize, vb: VarBuilder) -> Result<Self> {
        let vb = vb.pp("conv");
        let w = gemm_weight(&vb.get((cout, cin, 1), "weight")?, None)?;
        Ok(Self {
            w,
            b: vb.get(cout, "bias")?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.matmul(&self.w)?.broadcast_add(&self.b)?)
    }
}

/// ref: speechbrain/lobes/models/ECAPA_TDNN.py `TDNNBlock`: Conv1d('same', reflect) → ReLU →
/// BatchNorm1d, as one unfold + GEMM + fused epilogue (|BN scale| folded into the conv).
pub struct TdnnBlock {
    w: Tensor,
    k: usize,
    dilation: usize,
    bias: Vec<f32>,
    sign: Option<Vec<f32>>,
    shift: Vec<f32>,
}

impl TdnnBlock {
    pub fn new(cin: usize, cout: usize, k: usize, dilation: usize, vb: VarBuilder) -> Result<Self> {
        let conv = vb.pp("conv").pp("conv");
        let w = conv.get((cout, cin, k), "weight")?;
        let b = conv.get(cout, "bias")?.to_vec1::<f32>()?;
        let (s, t) = batch_norm_affine(&vb.pp("norm").pp("norm"), cout)?;
        let abs: Vec<f64> = s.iter().map(|x| x.abs()).collect();
        let sign = s.iter().any(|x| *x < 0.0).then(|| {
            s.iter()
                .map(|x| if *x < 0.0 { -1.0 } else { 1.0 })
                .collect()
        });
        Ok(Self {
            w: gemm_weight(&w, Some(&abs))?,
            k,
            dilation,
            bias: b
                .iter()
                .zip(&abs)
                .map(|(b, a)| (f64::from(*b) * a) as f32)
                .collect(),
            sign,
            shift: t.iter().map(|x| *x as f32).collect(),
        })
    }

    /// The GEMM operand, for callers that split it (attention's global context).
    pub(crate) fn weight(&self) -> &Tensor {
        &self.w
    }

    /// Applies bias, ReLU and the folded BatchNorm in place to a GEMM output.
    pub(crate) fn epilogue(&self, y: &Tensor) -> Result<()> {
        let op = BiasReluAffine {
            bias: &self.bias,
            sign: self.sign.as_deref(),
            shift: &self.shift,
        };
        y.inplace_op1(&op)?;
        Ok(())
    }

    pub fn forward(&self, x: &Tensor, frames: usize) -> Result<Tensor> {
        let y = if self.k == 1 {
            x.matmul(&self.w)?
        } else {
            let op = ReflectUnfold {
                k: self.k,
                dilation: self.dilation,
                frames,
            };
            x.apply_op1_no_bwd(&op)?.matmul(&self.w)?
        };
        self.epilogue(&y)?;
        Ok(y)
    }
}

/// ref: ECAPA_TDNN.py `Res2NetBlock`: channel chunks, chunk i>0 goes through its own TDNN block
/// after adding the previous chunk's output (chunk 0 passes through).
pub struct Res2NetBlock {
    blocks: Vec<TdnnBlock>,
    scale: usize,
}

impl Res2NetBlock {
    pub fn new(
        channels: usize,
        scale: usize,
        k: usize,
        dilation: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let w = channels / scale;
        let vb = vb.pp("blocks");
        let blocks = (0..scale - 1)
            .map(|i| TdnnBlock::new(w, w, k, dilation, vb.pp(i)))
            .collect::<Result<_>>()?;
        Ok(Self { blocks, scale })
    }

    pub fn forward(&self, x: &Tensor, frames: usize) -> Result<Tensor> {
        let w = x.dim(1)? / self.scale;
        let mut ys = Vec::with_capacity(self.scale);
        ys.push(x.narrow(1, 0, w)?);
        for (i, block) in self.blocks.iter().enumerate() {
            let xi = x.narrow(1, (i + 1) * w, w)?;
            let input = if i == 0 { xi } else { (xi + &ys[i])? };
            ys.push(block.forward(&input, frames)?);
        }
        Ok(Tensor::cat(&ys, 1)?)
    }
}

/// ref: ECAPA_TDNN.py `SEBlock`: squeeze (mean over time) → conv1 → ReLU → conv2 → sigmoid →
/// scale the channels.
pub struct SeBlock {
    conv1: Conv1x1,
    conv2: Conv1x1,
}

impl SeBlock {
    pub fn new(channels: usize, se_channels: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv1: Conv1x1::new(channels, se_channels, vb.pp("conv1"))?,
            conv2: Conv1x1::new(se_channels, channels, vb.pp("conv2"))?,
        })
    }

    pub fn forward(&self, x: &Tensor, frames: usize) -> Result<Tensor> {
        let (n, c) = x.dims2()?;
        let mean = x.apply_op1_no_bwd(&TimeMean { frames })?;
        let s = self.conv1.forward(&mean)?.relu()?;
        let s = candle_nn::ops::sigmoid(&self.conv2.forward(&s)?)?;
        let x3 = x.reshape((n / frames, frames, c))?;
        Ok(x3.broadcast_mul(&s.unsqueeze(1)?)?.reshape((n, c))?)
    }
}

/// ref: ECAPA_TDNN.py `SERes2NetBlock`: TDNN(k=1) → Res2Net → TDNN(k=1) → SE, plus the
/// residual (through a 1×1 conv when the width changes).
pub struct SeRes2NetBlock {
    tdnn1: TdnnBlock,
    res2net: Res2NetBlock,
    tdnn2: TdnnBlock,
    se: SeBlock,
    shortcut: Option<Conv1x1>,
}

impl SeRes2NetBlock {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cin: usize,
        cout: usize,
        scale: usize,
        se_channels: usize,
        k: usize,
        dilation: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            tdnn1: TdnnBlock::new(cin, cout, 1, 1, vb.pp("tdnn1"))?,
            res2net: Res2NetBlock::new(cout, scale, k, dilation, vb.pp("res2net_block"))?,
            tdnn2: TdnnBlock::new(cout, cout, 1, 1, vb.pp("tdnn2"))?,
            se: SeBlock::new(cout, se_channels, vb.pp("se_block"))?,
            shortcut: if cin != cout {
                Some(Conv1x1::new(cin, cout, vb.pp("shortcut"))?)
            } else {
                None
            },
        })
    }

    pub fn forward(&self, x: &Tensor, frames: usize) -> Result<Tensor> {
        let y = self.tdnn1.forward(x, frames)?;
        let y = self.res2net.forward(&y, frames)?;
        let y = self.tdnn2.forward(&y, frames)?;
        let y = self.se.forward(&y, frames)?;
        Ok(match &self.shortcut {
            Some(sc) => (y + sc.forward(x)?)?,
            None => (y + x)?,
        })
    }
}

/// ref: ECAPA_TDNN.py `AttentiveStatisticsPooling` with global context: attention over time
/// from `[x, mean(x), std(x)]`, then the attention-weighted mean and std.
///
/// The TDNN on the 3C-wide concatenation is split: `W·[x; μ; σ] = W_x·x + (W_μ·μ + W_σ·σ)`, and
/// the second term is constant over time, so it is one small (B, 2C)·(2C, A) product added per
/// item instead of a third of a (B·T, 3C)·(3C, A) GEMM and a 3C-wide copy.
pub struct AttentiveStatisticsPooling {
    tdnn: TdnnBlock,
    conv: Conv1x1,
    w_x: Tensor,
    /// `[W_μ; W_σ]` as (2C, A); `None` without global context.
    w_ctx: Option<Tensor>,
}

impl AttentiveStatisticsPooling {
    pub fn new(
        channels: usize,
        attention: usize,
        global_context: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let cin = if global_context {
            3 * channels
        } else {
            channels
        };
        let tdnn = TdnnBlock::new(cin, attention, 1, 1, vb.pp("tdnn"))?;
        let w = tdnn.weight();
        let (w_x, w_ctx) = if global_context {
            (
                w.narrow(0, 0, channels)?.contiguous()?,
                Some(w.narrow(0, channels, 2 * channels)?.contiguous()?),
            )
        } else {
            (w.clone(), None)
        };
        Ok(Self {
            conv: Conv1x1::new(attention, channels, vb.pp("conv"))?,
            tdnn,
            w_x,
            w_ctx,
        })
    }

    /// `x (B·T, C)` → pooled `(B, 2C)` = `[mean, std]`.
    pub fn forward(&self, x: &Tensor, frames: usize) -> Result<Tensor> {
        let (n, c) = x.dims2()?;
        let b = n / frames;
        let mut h = x.matmul(&self.w_x)?;
        if let Some(w_ctx) = &self.w_ctx {
            // uniform weights 1/T: the plain mean and (biased) std over time
            let ctx = x.apply_op1_no_bwd(&MeanStd { frames })?.matmul(w_ctx)?; // (B, A)
            let a = ctx.dim(1)?;
            h = h
                .reshape((b, frames, a))?
                .broadcast_add(&ctx.unsqueeze(1)?)?
                .reshape((n, a))?;
        }
        self.tdnn.epilogue(&h)?;
        let logits = self.conv.forward(&h.tanh()?)?;
        debug_assert_eq!(logits.dims2()?, (n, c));
        Ok(x.apply_op2_no_bwd(&logits, &AttentiveStats { frames })?)
    }
}

/// ref: ECAPA_TDNN.py `ECAPA_TDNN.asp_bn` (BatchNorm1d) + `ECAPA_TDNN.fc` (Conv1d, k=1), the
/// BatchNorm folded exactly into the linear map (no nonlinearity between them).
pub struct PooledHead {
    w: Tensor,
    b: Tensor,
}

impl PooledHead {
    pub fn new(cin: usize, lin: usize, vb: VarBuilder) -> Result<Self> {
        let (s, t) = batch_norm_affine(&vb.pp("asp_bn").pp("norm"), cin)?;
        let fc = vb.pp("fc").pp("conv");
        let w = fc
            .get((lin, cin, 1), "weight")?
            .squeeze(2)?
            .to_dtype(DType::F64)?; // (lin, cin)
        let bias = fc.get(lin, "bias")?.to_dtype(DType::F64)?;
        let s = Tensor::from_vec(s, (1, cin), w.device())?;
        let t = Tensor::from_vec(t, (cin, 1), w.device())?;
        // fc(s·x + t) = (W·diag(s))·x + (W·t + b)
        let b = (w.matmul(&t)?.squeeze(D::Minus1)? + bias)?.to_dtype(DType::F32)?;
        let w = w
            .broadcast_mul(&s)?
            .t()?
            .contiguous()?
            .to_dtype(DType::F32)?;
        Ok(Self { w, b })
    }

    pub fn forward(&self, pooled: &Tensor) -> Result<Tensor> {
        Ok(pooled.matmul(&self.w)?.broadcast_add(&self.b)?)
    }
}
