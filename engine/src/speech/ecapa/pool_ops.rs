//! Pooling over time as single-pass custom candle ops on frame-major `(B·T, C)` tensors: the SE
//! squeeze (mean), the attention's global context (mean, std) and attentive statistics
//! (softmax over time, weighted mean and std). candle's generic reductions over a middle
//! dimension walk the tensor element by element; these run row by row, vectorised over channels.

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Shape};

/// ref: ECAPA_TDNN.py `AttentiveStatisticsPooling.eps` (the variance is clamped before the sqrt).
const STATS_EPS: f32 = 1e-12;

fn contiguous_f32<'a>(
    s: &'a CpuStorage,
    l: &Layout,
    op: &str,
) -> candle_core::Result<(&'a [f32], usize, usize)> {
    let CpuStorage::F32(v) = s else {
        bail!("{op}: f32 only")
    };
    let (n, c) = l.shape().dims2()?;
    let Some((start, end)) = l.contiguous_offsets() else {
        bail!("{op}: needs a contiguous input")
    };
    Ok((&v[start..end], n, c))
}

fn items(n: usize, frames: usize, op: &str) -> candle_core::Result<usize> {
    if frames == 0 || !n.is_multiple_of(frames) {
        bail!("{op}: {n} rows are not whole items of {frames} frames")
    }
    Ok(n / frames)
}

/// Mean over time: `(B·T, C)` → `(B, C)` (ref: `SEBlock.forward`, `x.mean(dim=2)`).
pub(crate) struct TimeMean {
    pub frames: usize,
}

impl CustomOp1 for TimeMean {
    fn name(&self) -> &'static str {
        "time-mean"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, n, c) = contiguous_f32(s, l, self.name())?;
        let b = items(n, self.frames, self.name())?;
        let mut out = vec![0f32; b * c];
        let inv = 1.0 / self.frames as f32;
        for (item, acc) in out.chunks_exact_mut(c).enumerate() {
            for row in x[item * self.frames * c..(item + 1) * self.frames * c].chunks_exact(c) {
                acc.iter_mut().zip(row).for_each(|(a, v)| *a += v);
            }
            acc.iter_mut().for_each(|a| *a *= inv);
        }
        Ok((CpuStorage::F32(out), Shape::from((b, c))))
    }
}

/// Weighted mean and std over time of one item: `x`, `w` are `T × C` rows; `w` sums to one
/// over T per channel. Writes `[mean; std]` into `out` (2C).
fn weighted_mean_std(x: &[f32], w: &[f32], c: usize, out: &mut [f32]) {
    let (mean, std) = out.split_at_mut(c);
    for (xr, wr) in x.chunks_exact(c).zip(w.chunks_exact(c)) {
        for ((m, xv), wv) in mean.iter_mut().zip(xr).zip(wr) {
            *m += wv * xv;
        }
    }
    for (xr, wr) in x.chunks_exact(c).zip(w.chunks_exact(c)) {
        for (((s, xv), wv), m) in std.iter_mut().zip(xr).zip(wr).zip(mean.iter()) {
            let d = xv - m;
            *s += wv * d * d;
        }
    }
    std.iter_mut().for_each(|s| *s = s.max(STATS_EPS).sqrt());
}

/// Uniform-weight mean and std over time: `(B·T, C)` → `(B, 2C)` (the global context of
/// `AttentiveStatisticsPooling`, `_compute_statistics(x, mask / total)`).
pub(crate) struct MeanStd {
    pub frames: usize,
}

impl CustomOp1 for MeanStd {
    fn name(&self) -> &'static str {
        "mean-std"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, n, c) = contiguous_f32(s, l, self.name())?;
        let b = items(n, self.frames, self.name())?;
        let uniform = vec![1.0 / self.frames as f32; self.frames * c];
        let mut out = vec![0f32; b * 2 * c];
        for (item, o) in out.chunks_exact_mut(2 * c).enumerate() {
            let xi = &x[item * self.frames * c..(item + 1) * self.frames * c];
            weighted_mean_std(xi, &uniform, c, o);
        }
        Ok((CpuStorage::F32(out), Shape::from((b, 2 * c))))
    }
}

/// Softmax of the attention logits over time, then the weighted mean and std of `x`:
/// `x, logits (B·T, C)` → `(B, 2C)` (the end of `AttentiveStatisticsPooling.forward`).
pub(crate) struct AttentiveStats {
    pub frames: usize,
}

impl CustomOp2 for AttentiveStats {
    fn name(&self) -> &'static str {
        "attentive-stats"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, n, c) = contiguous_f32(s1, l1, self.name())?;
        let (logits, n2, c2) = contiguous_f32(s2, l2, self.name())?;
        if (n, c) != (n2, c2) {
            bail!("attentive-stats: x {n}x{c} vs logits {n2}x{c2}")
        }
        let t = self.frames;
        let b = items(n, t, self.name())?;
        let mut out = vec![0f32; b * 2 * c];
        let mut w = vec![0f32; t * c];
        let mut max = vec![0f32; c];
        let mut sum = vec![0f32; c];
        for (item, o) in out.chunks_exact_mut(2 * c).enumerate() {
            let li = &logits[item * t * c..(item + 1) * t * c];
            max.fill(f32::NEG_INFINITY);
            for row in li.chunks_exact(c) {
                max.iter_mut().zip(row).for_each(|(m, v)| *m = m.max(*v));
            }
            sum.fill(0.0);
            for (wr, lr) in w.chunks_exact_mut(c).zip(li.chunks_exact(c)) {
                for (((wv, lv), m), s) in wr.iter_mut().zip(lr).zip(&max).zip(sum.iter_mut()) {
                    *wv = (lv - m).exp();
                    *s += *wv;
                }
            }
            let inv: Vec<f32> = sum.iter().map(|s| 1.0 / s).collect();
            for wr in w.chunks_exact_mut(c) {
                wr.iter_mut().zip(&inv).for_each(|(wv, i)| *wv *= i);
            }
            weighted_mean_std(&x[item * t * c..(item + 1) * t * c], &w, c, o);
        }
        Ok((CpuStorage::F32(out), Shape::from((b, 2 * c))))
    }
}
