//! The checkpoint's parameter names and shapes for a config, and seeded random weights with
//! them: for benchmarks on a clean machine and plumbing tests, never for scoring real speakers.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};

use super::config::EcapaConfig;
use crate::speech::error::Result;

/// Every learnable tensor (and BatchNorm running statistic) of SpeechBrain's ECAPA_TDNN state
/// dict for `cfg`, as (key, shape), in module order. `num_batches_tracked` is left out: unused.
pub fn parameter_shapes(cfg: &EcapaConfig) -> Vec<(String, Vec<usize>)> {
    let mut p = Vec::new();
    let ch = &cfg.channels;
    let n = ch.len();
    tdnn(
        &mut p,
        "blocks.0",
        cfg.input_size,
        ch[0],
        cfg.kernel_sizes[0],
    );
    for i in 1..n - 1 {
        let pre = format!("blocks.{i}");
        tdnn(&mut p, &format!("{pre}.tdnn1"), ch[i - 1], ch[i], 1);
        let w = ch[i] / cfg.res2net_scale;
        for j in 0..cfg.res2net_scale - 1 {
            tdnn(
                &mut p,
                &format!("{pre}.res2net_block.blocks.{j}"),
                w,
                w,
                cfg.kernel_sizes[i],
            );
        }
        tdnn(&mut p, &format!("{pre}.tdnn2"), ch[i], ch[i], 1);
        conv(
            &mut p,
            &format!("{pre}.se_block.conv1"),
            ch[i],
            cfg.se_channels,
            1,
        );
        conv(
            &mut p,
            &format!("{pre}.se_block.conv2"),
            cfg.se_channels,
            ch[i],
            1,
        );
        if ch[i - 1] != ch[i] {
            conv(&mut p, &format!("{pre}.shortcut"), ch[i - 1], ch[i], 1);
        }
    }
    tdnn(
        &mut p,
        "mfa",
        ch[n - 2] * (n - 2),
        ch[n - 1],
        cfg.kernel_sizes[n - 1],
    );
    let c = ch[n - 1];
    let asp_in = if cfg.global_context { 3 * c } else { c };
    tdnn(&mut p, "asp.tdnn", asp_in, cfg.attention_channels, 1);
    conv(&mut p, "asp.conv", cfg.attention_channels, c, 1);
    bn(&mut p, "asp_bn.norm", 2 * c);
    conv(&mut p, "fc", 2 * c, cfg.lin_neurons, 1);
    p
}

fn conv(p: &mut Vec<(String, Vec<usize>)>, pre: &str, cin: usize, cout: usize, k: usize) {
    p.push((format!("{pre}.conv.weight"), vec![cout, cin, k]));
    p.push((format!("{pre}.conv.bias"), vec![cout]));
}

fn bn(p: &mut Vec<(String, Vec<usize>)>, pre: &str, c: usize) {
    for s in ["weight", "bias", "running_mean", "running_var"] {
        p.push((format!("{pre}.{s}"), vec![c]));
    }
}

fn tdnn(p: &mut Vec<(String, Vec<usize>)>, pre: &str, cin: usize, cout: usize, k: usize) {
    conv(p, &format!("{pre}.conv"), cin, cout, k);
    bn(p, &format!("{pre}.norm.norm"), cout);
}

/// Seeded random weights: conv weights N(0, 1/fan_in), biases N(0, 0.01), BatchNorm gamma in
/// [0.5, 1.5), beta and running mean N(0, 0.01), running var in [0.5, 1.5).
pub fn random_weights(cfg: &EcapaConfig, seed: u64) -> Result<HashMap<String, Tensor>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut normal = move |std: f32| -> f32 {
        // Box-Muller; 1 - u keeps the log finite
        let u: f32 = 1.0 - rng.random::<f32>();
        let v: f32 = rng.random::<f32>();
        std * (-2.0 * u.ln()).sqrt() * (2.0 * std::f32::consts::PI * v).cos()
    };
    let mut uni = rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed);
    let mut out = HashMap::new();
    for (name, shape) in parameter_shapes(cfg) {
        let len: usize = shape.iter().product();
        let data: Vec<f32> = if shape.len() == 3 {
            let std = 1.0 / ((shape[1] * shape[2]) as f32).sqrt();
            (0..len).map(|_| normal(std)).collect()
        } else if name.ends_with("norm.weight") || name.ends_with("running_var") {
            (0..len).map(|_| 0.5 + uni.random::<f32>()).collect()
        } else {
            (0..len).map(|_| normal(0.1)).collect()
        };
        out.insert(name, Tensor::from_vec(data, shape, &Device::Cpu)?);
    }
    Ok(out)
}
