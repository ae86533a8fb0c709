//! What a LoRA adapter adapts: rank, scaling, dropout, target projections and layers.

use std::ops::Range;

use engram_runtime::model::llama::Proj;

/// LoRA hyper-parameters, PEFT's `LoraConfig` in the fields that matter on device.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoraConfig {
    /// Rank `r` of the update `B·A`.
    pub rank: usize,
    /// `lora_alpha`: the update is scaled by `alpha / r` (or `alpha / √r` with rsLoRA).
    pub alpha: f32,
    /// Dropout probability on the adapter's input while training.
    pub dropout: f32,
    /// Projections that get an adapter.
    pub targets: Vec<Proj>,
    /// Blocks that get adapters (`None`: all).
    pub layers: Option<Range<usize>>,
    /// rsLoRA scaling (`alpha / √r`, Kalajdzievski 2023) instead of `alpha / r`.
    pub rslora: bool,
    /// Seed of `A`'s initialization and of dropout masks.
    pub seed: u64,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            rank: 8,
            alpha: 16.0,
            dropout: 0.0,
            targets: vec![Proj::Q, Proj::V],
            layers: None,
            rslora: false,
            seed: 0,
        }
    }
}

/// A target or layer specification that does not parse.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error(
    "bad LoRA target `{0}`: use q, k, v, o, gate, up, down (or q_proj / attn_q names), attn, mlp, all-linear"
)]
pub struct BadTarget(pub String);

impl LoraConfig {
    /// The factor applied to `B·A·x`.
    pub fn scale(&self) -> f32 {
        if self.rslora {
            self.alpha / (self.rank as f32).sqrt()
        } else {
            self.alpha / self.rank as f32
        }
    }

    /// Whether block `layer` is adapted.
    pub fn covers_layer(&self, layer: usize) -> bool {
        self.layers.as_ref().is_none_or(|r| r.contains(&layer))
    }

    /// Parses a comma-separated target list. Names may be short (`q`), PEFT's (`q_proj`) or
    /// GGUF's (`attn_q`); groups: `attn` (q,k,v,o), `mlp` (gate,up,down), `all-linear`.
    pub fn parse_targets(spec: &str) -> Result<Vec<Proj>, BadTarget> {
        let mut out = Vec::new();
        for name in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let group: &[Proj] = match name {
                "attn" => &[Proj::Q, Proj::K, Proj::V, Proj::O],
                "mlp" => &[Proj::Gate, Proj::Up, Proj::Down],
                "all-linear" | "all" => &Proj::ALL,
                _ => {
                    let p = Proj::ALL
                        .into_iter()
                        .find(|p| {
                            name == p.hf_name()
                                || name == p.gguf_name()
                                || name == p.hf_name().trim_end_matches("_proj")
                                || (name == "o" && *p == Proj::O)
                        })
                        .ok_or_else(|| BadTarget(name.to_owned()))?;
                    out.push(p);
                    continue;
                }
            };
            out.extend_from_slice(group);
        }
        if out.is_empty() {
            return Err(BadTarget(spec.to_owned()));
        }
        out.sort_by_key(|p| Proj::ALL.iter().position(|q| q == p));
        out.dedup();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_in_every_naming() {
        let t = LoraConfig::parse_targets("v_proj, q, attn_output").unwrap();
        assert_eq!(t, vec![Proj::Q, Proj::V, Proj::O]);
        assert_eq!(
            LoraConfig::parse_targets("all-linear").unwrap(),
            Proj::ALL.to_vec()
        );
        assert_eq!(
            LoraConfig::parse_targets("mlp,down").unwrap(),
            vec![Proj::Gate, Proj::Up, Proj::Down]
        );
        assert!(LoraConfig::parse_targets("qq").is_err());
        assert!(LoraConfig::parse_targets("").is_err());
    }

    #[test]
    fn scaling_follows_peft() {
        let mut c = LoraConfig {
            rank: 16,
            alpha: 32.0,
            ..Default::default()
        };
        assert_eq!(c.scale(), 2.0);
        c.rslora = true;
        assert_eq!(c.scale(), 8.0);
    }
}
