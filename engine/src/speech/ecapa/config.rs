//! The ECAPA-TDNN hyper-parameters, read from the `embedding_model:` section of a SpeechBrain
//! `hyperparams.yaml` (hyperpyyaml: `!new:` tags and `!ref <key>` references to top-level keys).

use serde_yaml::Value;

use crate::speech::error::{Result, SpeechError};

/// ref: speechbrain/lobes/models/ECAPA_TDNN.py `ECAPA_TDNN.__init__` arguments.
/// `Default` is the `spkrec-ecapa-voxceleb` recipe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcapaConfig {
    pub input_size: usize,
    pub channels: Vec<usize>,
    pub kernel_sizes: Vec<usize>,
    pub dilations: Vec<usize>,
    pub attention_channels: usize,
    pub res2net_scale: usize,
    pub se_channels: usize,
    pub lin_neurons: usize,
    pub global_context: bool,
}

impl Default for EcapaConfig {
    fn default() -> Self {
        Self {
            input_size: 80,
            channels: vec![1024, 1024, 1024, 1024, 3072],
            kernel_sizes: vec![5, 3, 3, 3, 1],
            dilations: vec![1, 2, 3, 4, 1],
            attention_channels: 128,
            res2net_scale: 8,
            se_channels: 128,
            lin_neurons: 192,
            global_context: true,
        }
    }
}

impl EcapaConfig {
    /// Parses a hyperparams.yaml; keys absent from `embedding_model` keep SpeechBrain's
    /// `spkrec-ecapa-voxceleb` values.
    pub fn from_yaml(text: &str) -> Result<Self> {
        let root: Value =
            serde_yaml::from_str(text).map_err(|e| SpeechError::Config(format!("yaml: {e}")))?;
        let section = root
            .get("embedding_model")
            .ok_or_else(|| SpeechError::Config("no embedding_model section".into()))?;
        let section = untag(section);
        let mut cfg = Self::default();
        let get = |key: &str| section.get(key).map(|v| resolve(&root, v));
        if let Some(v) = get("input_size") {
            cfg.input_size = as_usize(&v, "input_size")?;
        }
        if let Some(v) = get("channels") {
            cfg.channels = as_list(&v, "channels")?;
        }
        if let Some(v) = get("kernel_sizes") {
            cfg.kernel_sizes = as_list(&v, "kernel_sizes")?;
        }
        if let Some(v) = get("dilations") {
            cfg.dilations = as_list(&v, "dilations")?;
        }
        if let Some(v) = get("attention_channels") {
            cfg.attention_channels = as_usize(&v, "attention_channels")?;
        }
        if let Some(v) = get("res2net_scale") {
            cfg.res2net_scale = as_usize(&v, "res2net_scale")?;
        }
        if let Some(v) = get("se_channels") {
            cfg.se_channels = as_usize(&v, "se_channels")?;
        }
        if let Some(v) = get("lin_neurons") {
            cfg.lin_neurons = as_usize(&v, "lin_neurons")?;
        }
        if let Some(v) = get("global_context") {
            cfg.global_context = v
                .as_bool()
                .ok_or_else(|| SpeechError::Config("global_context: not a bool".into()))?;
        }
        if let Some(v) = get("groups") {
            if as_list(&v, "groups")?.iter().any(|g| *g != 1) {
                return Err(SpeechError::Config(
                    "grouped convolutions are not supported".into(),
                ));
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// The constraints SpeechBrain asserts, plus what our layers assume.
    pub fn validate(&self) -> Result<()> {
        let n = self.channels.len();
        let bad = |m: String| Err(SpeechError::Config(m));
        if n < 3 || self.kernel_sizes.len() != n || self.dilations.len() != n {
            return bad(format!(
                "channels/kernel_sizes/dilations lengths {}/{}/{} (need equal, >= 3)",
                n,
                self.kernel_sizes.len(),
                self.dilations.len()
            ));
        }
        if self.kernel_sizes.iter().any(|k| k % 2 == 0) || self.dilations.contains(&0) {
            return bad("kernel sizes must be odd and dilations positive".into());
        }
        if self.res2net_scale < 2
            || self.channels[1..n - 1]
                .iter()
                .any(|c| c % self.res2net_scale != 0)
        {
            return bad(format!(
                "res2net_scale {} must divide the block channels",
                self.res2net_scale
            ));
        }
        let zero = [
            self.input_size,
            self.attention_channels,
            self.se_channels,
            self.lin_neurons,
        ];
        if zero.contains(&0) || self.channels.contains(&0) {
            return bad("zero-sized layer".into());
        }
        Ok(())
    }

    /// The widest reflect padding of any convolution: inputs need more frames than this.
    pub fn max_padding(&self) -> usize {
        self.kernel_sizes
            .iter()
            .zip(&self.dilations)
            .map(|(k, d)| d * (k - 1) / 2)
            .max()
            .unwrap_or(0)
    }
}

/// `!new:…` mappings carry their arguments under a tag.
fn untag(v: &Value) -> &Value {
    match v {
        Value::Tagged(t) => &t.value,
        other => other,
    }
}

/// Follows `!ref <key>` to a top-level key (one level; enough for `!ref <n_mels>`).
fn resolve(root: &Value, v: &Value) -> Value {
    if let Value::Tagged(t) = v {
        if t.tag.to_string().trim_start_matches('!') == "ref" {
            if let Some(key) = t
                .value
                .as_str()
                .and_then(|s| s.strip_prefix('<')?.strip_suffix('>'))
            {
                if let Some(target) = root.get(key) {
                    return untag(target).clone();
                }
            }
        }
        return t.value.clone();
    }
    v.clone()
}

fn as_usize(v: &Value, what: &str) -> Result<usize> {
    v.as_u64()
        .map(|x| x as usize)
        .ok_or_else(|| SpeechError::Config(format!("{what}: not a non-negative integer")))
}

fn as_list(v: &Value, what: &str) -> Result<Vec<usize>> {
    v.as_sequence()
        .ok_or_else(|| SpeechError::Config(format!("{what}: not a list")))?
        .iter()
        .map(|x| as_usize(x, what))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The shape of the published spkrec-ecapa-voxceleb hyperparams.yaml.
    const VOXCELEB: &str = r#"
n_mels: 80
pretrained_path: speechbrain/spkrec-ecapa-voxceleb
out_n_neurons: 7205
compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: !ref <n_mels>
mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False
embedding_model: !new:speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN
    input_size: !ref <n_mels>
    channels: [1024, 1024, 1024, 1024, 3072]
    kernel_sizes: [5, 3, 3, 3, 1]
    dilations: [1, 2, 3, 4, 1]
    attention_channels: 128
    lin_neurons: 192
classifier: !new:speechbrain.lobes.models.ECAPA_TDNN.Classifier
    input_size: 192
    out_neurons: !ref <out_n_neurons>
pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        embedding_model: !ref <embedding_model>
    paths:
        embedding_model: !ref <pretrained_path>/embedding_model.ckpt
"#;

    #[test]
    fn parses_the_voxceleb_recipe() {
        let cfg = EcapaConfig::from_yaml(VOXCELEB).unwrap();
        assert_eq!(cfg, EcapaConfig::default());
        assert_eq!(cfg.max_padding(), 4);
    }

    #[test]
    fn reads_reduced_configs_and_rejects_bad_ones() {
        let y = VOXCELEB.replace("[1024, 1024, 1024, 1024, 3072]", "[64, 64, 64, 64, 192]");
        assert_eq!(
            EcapaConfig::from_yaml(&y).unwrap().channels,
            vec![64, 64, 64, 64, 192]
        );
        let y = VOXCELEB.replace("[5, 3, 3, 3, 1]", "[5, 3, 3]");
        assert!(EcapaConfig::from_yaml(&y).is_err());
        assert!(EcapaConfig::from_yaml("n_mels: 80\n").is_err());
        assert!(EcapaConfig::from_yaml(": : :").is_err());
    }
}
