//! Fuzzes the llama.cpp LoRA GGUF loader's byte-level half: `Gguf::parse`, then
//! `lora_gguf_layout` against a tiny model's shapes (2 blocks, width 64, kv 32, MLP 96), then
//! every adapted tensor's values (`lora_tensor_values`) — the code `Lora::load_llama_cpp` runs
//! before it builds the adapter. Any input must give `Ok` or an error, never a panic, and a
//! layout that passes must fit the model.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code, unused_imports, missing_docs)]
#[path = "../../runtime/src/format/mod.rs"]
mod format;
#[allow(dead_code, missing_docs)]
#[path = "../../adapters/src/lora/gguf_layout.rs"]
mod gguf_layout;

use engram_kernels::GgmlType;
use format::Gguf;
use gguf_layout::{ProjShapes, lora_gguf_layout, lora_tensor_values};

fuzz_target!(|data: &[u8]| {
    let Ok(gguf) = Gguf::parse(data) else { return };
    let shapes = ProjShapes {
        n_layer: 2,
        projections: vec![
            ("attn_q", 64, 64),
            ("attn_k", 64, 32),
            ("attn_v", 64, 32),
            ("attn_output", 64, 64),
            ("ffn_gate", 64, 96),
            ("ffn_up", 64, 96),
            ("ffn_down", 96, 64),
        ],
    };
    let Ok(layout) = lora_gguf_layout(&gguf, data.len(), &shapes) else {
        return;
    };
    assert!(layout.rank >= 1 && layout.rank <= 64);
    assert!(layout.alpha.is_finite());
    assert!(layout.layers.end <= 2 && layout.layers.start < layout.layers.end);
    for l in layout.layers.clone() {
        for p in &layout.targets {
            for ab in ["a", "b"] {
                let name = format!("blk.{l}.{p}.weight.lora_{ab}");
                if let Ok(v) = lora_tensor_values(&gguf, data, &name) {
                    assert!(v.iter().all(|x| x.is_finite()));
                }
            }
        }
    }
});
