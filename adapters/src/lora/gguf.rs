//! llama.cpp's LoRA adapter format: a GGUF file with `general.type = "adapter"`,
//! `adapter.type = "lora"`, `adapter.lora.alpha`, and tensors `blk.{i}.{proj}.weight.lora_a`
//! (ggml dims `[n_in, r]`) and `.lora_b` (`[r, n_out]`), in the base model's own row order.
//! `llama-cli --lora FILE` and llama-cpp-python's `lora_path` load it.

use std::path::Path;

use engram_kernels::GgmlType;
use engram_runtime::format::{Gguf, GgufBuilder, MetaValue};
use engram_runtime::io::{recover, write_bytes_atomic};
use engram_runtime::model::llama::{Llama, Proj};

use super::gguf_layout::{ProjShapes, lora_gguf_layout, lora_tensor_values};
use super::peft::AdapterIoError;
use super::{Lora, LoraConfig};

impl Lora {
    /// The adapter as llama.cpp GGUF bytes (f32 tensors) for a `llama` model.
    ///
    /// llama.cpp scales by `alpha / r`; an rsLoRA adapter is written with the `alpha` that gives
    /// the same factor (`alpha·√r`).
    pub fn to_llama_cpp_gguf(&self) -> Vec<u8> {
        self.llama_cpp_gguf("llama")
    }

    /// [`Lora::to_llama_cpp_gguf`] for `model`'s family: llama.cpp refuses an adapter whose
    /// `general.architecture` is not its base model's. (For a model with fused projections,
    /// phi3's `attn_qkv` / `ffn_up`, the tensors keep engram's separate names, which engram
    /// reads back but llama.cpp does not.)
    pub fn to_llama_cpp_gguf_for(&self, model: &Llama) -> Vec<u8> {
        self.llama_cpp_gguf(model.arch().arch.name())
    }

    fn llama_cpp_gguf(&self, architecture: &str) -> Vec<u8> {
        let c = &self.config;
        let alpha = c.scale() * c.rank as f32;
        let mut b = GgufBuilder::new()
            .metadata("general.architecture", MetaValue::Str(architecture.into()))
            .metadata("general.type", MetaValue::Str("adapter".into()))
            .metadata("adapter.type", MetaValue::Str("lora".into()))
            .metadata("adapter.lora.alpha", MetaValue::F32(alpha));
        let host = self.params.to_host();
        for (layer, proj, slot) in self.slots() {
            let stem = format!("blk.{layer}.{}.weight", proj.gguf_name());
            let le = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
            b = b.tensor(
                format!("{stem}.lora_a"),
                &[slot.n_in, c.rank],
                GgmlType::F32,
                &le(&host.values[slot.a.0]),
            );
            b = b.tensor(
                format!("{stem}.lora_b"),
                &[c.rank, slot.n_out],
                GgmlType::F32,
                &le(&host.values[slot.b.0]),
            );
        }
        b.build()
    }

    /// Writes [`Lora::to_llama_cpp_gguf`] to the single file `path` atomically. For the
    /// `adapter.gguf` inside an adapter directory use [`Lora::save_adapter_dir`], which commits
    /// it with the PEFT files as one generation.
    pub fn save_llama_cpp(&self, path: &Path) -> Result<(), AdapterIoError> {
        let _lock = engram_runtime::io::WriterLock::for_replace(path)?;
        write_bytes_atomic(path, &self.to_llama_cpp_gguf()).map_err(|source| AdapterIoError::Io {
            path: path.to_owned(),
            source,
        })
    }
}

impl Lora {
    /// Loads a llama.cpp LoRA GGUF for `model` (f32/f16/bf16/q8_0 tensors are read; the
    /// adapted projections and layers must form a rectangular set, as engram and
    /// llama.cpp's converter write them).
    pub fn load_llama_cpp(model: &Llama, path: &Path) -> Result<Lora, AdapterIoError> {
        let bad = |what: String| AdapterIoError::Weights {
            path: path.to_owned(),
            what,
        };
        let bytes = std::fs::read(path).map_err(|source| AdapterIoError::Io {
            path: path.to_owned(),
            source,
        })?;
        let gguf = Gguf::parse(&bytes).map_err(|e| bad(e.to_string()))?;
        let c = model.config();
        let shapes = ProjShapes {
            n_layer: c.n_layer,
            projections: Proj::ALL
                .into_iter()
                .map(|p| {
                    let w = model.weight(0, p);
                    (p.gguf_name(), w.n_in(), w.n_out())
                })
                .collect(),
        };
        let layout = lora_gguf_layout(&gguf, bytes.len(), &shapes).map_err(bad)?;
        let rank = layout.rank;
        let targets: Vec<Proj> = Proj::ALL
            .into_iter()
            .filter(|p| layout.targets.contains(&p.gguf_name()))
            .collect();
        let full = layout.layers == (0..c.n_layer);
        let config = LoraConfig {
            rank,
            alpha: layout.alpha,
            targets,
            layers: (!full).then_some(layout.layers),
            ..Default::default()
        };
        // The layout is checked against the model's shapes; what is left is the config's own.
        let mut lora = Lora::new(model, config).map_err(|e| bad(e.to_string()))?;
        let mut host = lora.params.to_host();
        let slots: Vec<_> = lora.slots().collect();
        for (layer, proj, slot) in slots {
            for (ab, id, dims) in [
                ("a", slot.a, [slot.n_in, rank]),
                ("b", slot.b, [rank, slot.n_out]),
            ] {
                let name = format!("blk.{layer}.{}.weight.lora_{ab}", proj.gguf_name());
                let t = gguf
                    .tensor(&name)
                    .ok_or_else(|| bad(format!("missing tensor `{name}`")))?;
                if t.dims != dims {
                    return Err(bad(format!(
                        "`{name}`: dims {:?}, the model needs {dims:?}",
                        t.dims
                    )));
                }
                let v = lora_tensor_values(&gguf, &bytes, &name).map_err(bad)?;
                host.values[id.0] = v;
            }
        }
        lora.params
            .load_host(&host)
            .map_err(|e| bad(e.to_string()))?;
        Ok(lora)
    }

    /// Loads an adapter from a PEFT directory or a llama.cpp `.gguf` file, after
    /// [`recover`]ing whatever an interrupted [`Lora::save_adapter_dir`] left (so a directory
    /// caught between its two renames is found).
    pub fn load(model: &Llama, path: &Path) -> Result<Lora, AdapterIoError> {
        recover(path)?;
        if path.is_dir() {
            Lora::load_peft(model, path)
        } else {
            Lora::load_llama_cpp(model, path)
        }
    }
}
