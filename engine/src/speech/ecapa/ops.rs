//! The two custom candle ops that make each convolution one GEMM: a reflect-padded unfold
//! (im2col) for frame-major activations, and the fused epilogue of a TDNN block (bias, ReLU and
//! the folded BatchNorm's sign and shift, in place on the GEMM output).
//!
//! Activations are frame-major 2-D tensors `(B·T, C)`: a 'same' Conv1d of kernel k is then
//! `unfold(x) (B·T, k·C) @ W (k·C, C_out)`, one GEMM over the whole batch.

use candle_core::{bail, CpuStorage, CustomOp1, InplaceOp1, Layout, Shape};

/// im2col with SpeechBrain's 'same' reflect padding (`F.pad(x, [p, p], mode="reflect")`,
/// p = d·(k−1)/2): output row (b, t) is `[x[b, r(t − p)], x[b, r(t − p + d)], …]` where `r`
/// mirrors indices at both ends without repeating the edge frame.
pub(crate) struct ReflectUnfold {
    pub k: usize,
    pub dilation: usize,
    /// Frames per batch item.
    pub frames: usize,
}

fn reflect(i: isize, t: usize) -> usize {
    let t = t as isize;
    let r = if i < 0 {
        -i
    } else if i >= t {
        2 * (t - 1) - i
    } else {
        i
    };
    r as usize
}

impl CustomOp1 for ReflectUnfold {
    fn name(&self) -> &'static str {
        "reflect-unfold"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(x) = storage else {
            bail!("reflect-unfold: f32 only")
        };
        let (n, c) = layout.shape().dims2()?;
        let &[rs, cs] = layout.stride() else {
            bail!("reflect-unfold: 2-D input")
        };
        let off = layout.start_offset();
        let (k, d, t) = (self.k, self.dilation, self.frames);
        let pad = d * (k - 1) / 2;
        if t == 0 || !n.is_multiple_of(t) {
            bail!("reflect-unfold: {n} rows are not whole items of {t} frames")
        }
        if pad >= t {
            bail!("reflect-unfold: {t} frames are too few for reflect padding {pad}")
        }
        let kc = k * c;
        let mut out = vec![0f32; n * kc];
        for (row, dst_row) in out.chunks_exact_mut(kc).enumerate() {
            let (item, ti) = (row / t, row % t);
            for (j, dst) in dst_row.chunks_exact_mut(c).enumerate() {
                let src_t = reflect(ti as isize + (j * d) as isize - pad as isize, t);
                let base = off + (item * t + src_t) * rs;
                if cs == 1 {
                    dst.copy_from_slice(&x[base..base + c]);
                } else {
                    for (ci, v) in dst.iter_mut().enumerate() {
                        *v = x[base + ci * cs];
                    }
                }
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((n, kc))))
    }
}

/// `y = sign · relu(y + bias) + shift` per channel, in place: conv bias, ReLU and a BatchNorm
/// folded through the ReLU. BN(relu(z)) = s·relu(z) + t, and s·relu(z) = sign(s)·relu(|s|·z), so
/// |s| goes into the conv weights and bias at load time and only the sign and t remain here.
pub(crate) struct BiasReluAffine<'a> {
    pub bias: &'a [f32],
    /// `None` when every BatchNorm scale is non-negative (the usual trained model).
    pub sign: Option<&'a [f32]>,
    pub shift: &'a [f32],
}

impl InplaceOp1 for BiasReluAffine<'_> {
    fn name(&self) -> &'static str {
        "bias-relu-affine"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let CpuStorage::F32(y) = storage else {
            bail!("bias-relu-affine: f32 only")
        };
        let (n, c) = layout.shape().dims2()?;
        if !layout.is_contiguous() || c != self.bias.len() || c != self.shift.len() {
            bail!(
                "bias-relu-affine: needs a contiguous (N, {}) tensor",
                self.bias.len()
            )
        }
        let off = layout.start_offset();
        let rows = y[off..off + n * c].chunks_exact_mut(c);
        match self.sign {
            None => {
                for row in rows {
                    for ((v, b), t) in row.iter_mut().zip(self.bias).zip(self.shift) {
                        *v = (*v + b).max(0.0) + t;
                    }
                }
            }
            Some(sign) => {
                for row in rows {
                    for (((v, b), s), t) in row.iter_mut().zip(self.bias).zip(sign).zip(self.shift)
                    {
                        *v = (*v + b).max(0.0) * s + t;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn unfold_reflects_like_torch() {
        // one item, T=4, C=1, k=3, d=2 → pad 2: padded = x2 x1 | x0 x1 x2 x3 | x2 x1
        let x = Tensor::new(&[[0f32], [1.], [2.], [3.]], &Device::Cpu).unwrap();
        let u = x
            .apply_op1_no_bwd(&ReflectUnfold {
                k: 3,
                dilation: 2,
                frames: 4,
            })
            .unwrap();
        let got = u.to_vec2::<f32>().unwrap();
        assert_eq!(
            got,
            vec![
                vec![2., 0., 2.],
                vec![1., 1., 3.],
                vec![0., 2., 2.],
                vec![1., 3., 1.]
            ]
        );
        let too_short = Tensor::new(&[[0f32], [1.]], &Device::Cpu).unwrap();
        assert!(too_short
            .apply_op1_no_bwd(&ReflectUnfold {
                k: 3,
                dilation: 2,
                frames: 2
            })
            .is_err());
    }

    #[test]
    fn epilogue_applies_sign_and_shift() {
        let y = Tensor::new(&[[-1f32, 2.0], [3.0, -4.0]], &Device::Cpu).unwrap();
        let op = BiasReluAffine {
            bias: &[0.5, 0.0],
            sign: Some(&[1.0, -1.0]),
            shift: &[0.0, 1.0],
        };
        y.inplace_op1(&op).unwrap();
        assert_eq!(
            y.to_vec2::<f32>().unwrap(),
            vec![vec![0.0, -1.0], vec![3.5, 1.0]]
        );
    }
}
