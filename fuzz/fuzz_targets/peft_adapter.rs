//! Fuzzes a PEFT adapter directory's two files as `Lora::load_peft` decodes them: the first
//! input byte `n` splits the rest into `adapter_config.json` (`n * 4` bytes) and
//! `adapter_model.safetensors`; the config goes through `parse_peft_config` for a 2-block model,
//! the weights through `SafeTensors::deserialize` and `peft_tensor` for every tensor the config
//! asks for (tiny model shapes). Never a panic; what passes is in range and finite.
#![no_main]

use libfuzzer_sys::fuzz_target;
use safetensors::SafeTensors;

#[allow(dead_code, missing_docs)]
#[path = "../../adapters/src/lora/peft_config.rs"]
mod peft_config;
#[allow(dead_code, missing_docs)]
#[path = "../../adapters/src/lora/peft_weights.rs"]
mod peft_weights;

use peft_config::{TargetModules, parse_peft_config};

/// `(PEFT module, group, n_in, n_out)` of the tiny model's projections.
const PROJ: [(&str, &str, usize, usize); 7] = [
    ("q_proj", "self_attn", 64, 64),
    ("k_proj", "self_attn", 64, 32),
    ("v_proj", "self_attn", 64, 32),
    ("o_proj", "self_attn", 64, 64),
    ("gate_proj", "mlp", 64, 96),
    ("up_proj", "mlp", 64, 96),
    ("down_proj", "mlp", 96, 64),
];

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let split = (usize::from(n) * 4).min(rest.len());
    let (config, weights) = rest.split_at(split);
    let Ok(c) = parse_peft_config(config, 2) else {
        return;
    };
    assert!(c.rank >= 1 && c.alpha.is_finite() && (0.0..1.0).contains(&c.dropout));
    let layers = c.layers.clone().unwrap_or(0..2);
    assert!(layers.end <= 2);
    let Ok(st) = SafeTensors::deserialize(weights) else {
        return;
    };
    let targets: Vec<_> = match &c.targets {
        TargetModules::AllLinear => PROJ.to_vec(),
        TargetModules::Names(names) => PROJ
            .iter()
            .filter(|p| names.iter().any(|n| n == p.0))
            .copied()
            .collect(),
    };
    for l in layers {
        for &(module, group, n_in, n_out) in &targets {
            let name = |ab: &str| {
                format!("base_model.model.model.layers.{l}.{group}.{module}.lora_{ab}.weight")
            };
            for (ab, shape) in [("A", [c.rank, n_in]), ("B", [n_out, c.rank])] {
                if let Ok(v) = peft_weights::peft_tensor(&st, &name(ab), shape) {
                    assert_eq!(v.len(), shape[0] * shape[1]);
                }
            }
        }
    }
});
