//! llama.cpp's LoRA adapter format: a GGUF file with `general.type = "adapter"`,
//! `adapter.type = "lora"`, `adapter.lora.alpha`, and tensors `blk.{i}.{proj}.weight.lora_a`
//! (ggml dims `[n_in, r]`) and `.lora_b` (`[r, n_out]`), in the base model's own row order.
//! `llama-cli --lora FILE` and llama-cpp-python's `lora_path` load it.

use std::path::Path;

use engram_kernels::GgmlType;
use engram_runtime::format::{Gguf, GgufBuilder, MetaValue};
use engram_runtime::io::{recover, write_bytes_atomic};
use engram_runtime::model::llama::{Llama, Proj};

use super::peft::AdapterIoError;
use super::{Lora, LoraConfig};

impl Lora {
    /// The adapter as llama.cpp GGUF bytes (f32 tensors).
    ///
    /// llama.cpp scales by `alpha / r`; an rsLoRA adapter is written with the `alpha` that gives
    /// the same factor (`alpha·√r`).
    pub fn to_llama_cpp_gguf(&self) -> Vec<u8> {
        let c = &self.config;
        let alpha = c.scale() * c.rank as f32;
        let mut b = GgufBuilder::new()
            .metadata("general.architecture", MetaValue::Str("llama".into()))
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
        let meta = |k: &str| gguf.get_str(k).map_err(|e| bad(e.to_string()));
        if meta("general.type")? != "adapter" || meta("adapter.type")? != "lora" {
            return Err(bad(
                "not a LoRA adapter (general.type / adapter.type)".into()
            ));
        }
        let alpha = gguf
            .get_f32("adapter.lora.alpha")
            .map_err(|e| bad(e.to_string()))?;
        let mut targets = Vec::new();
        let mut layers = Vec::new();
        let mut rank = None;
        for t in gguf.tensors() {
            let Some(stem) = t.name.strip_suffix(".weight.lora_a") else {
                continue;
            };
            let mut parts = stem.splitn(3, '.');
            let (Some("blk"), Some(layer), Some(proj)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(bad(format!(
                    "`{}`: only blk.N.<proj> tensors are supported",
                    t.name
                )));
            };
            let layer: usize = layer
                .parse()
                .map_err(|_| bad(format!("`{}`: bad layer", t.name)))?;
            let proj = Proj::ALL
                .into_iter()
                .find(|p| p.gguf_name() == proj)
                .ok_or_else(|| bad(format!("`{}`: unknown projection", t.name)))?;
            if t.dims.len() != 2 || rank.is_some_and(|r| r != t.dims[1]) {
                return Err(bad(format!("`{}`: dims {:?}", t.name, t.dims)));
            }
            rank = Some(t.dims[1]);
            if !targets.contains(&proj) {
                targets.push(proj);
            }
            if !layers.contains(&layer) {
                layers.push(layer);
            }
        }
        let rank = rank.ok_or_else(|| bad("no lora_a tensors".into()))?;
        let (lo, hi) = (
            *layers.iter().min().unwrap_or(&0),
            *layers.iter().max().unwrap_or(&0),
        );
        if hi - lo + 1 != layers.len() || hi >= model.config().n_layer {
            return Err(bad(format!(
                "adapted layers {layers:?} are not a range of the model's"
            )));
        }
        targets.sort_by_key(|p| Proj::ALL.iter().position(|q| q == p));
        let full = lo == 0 && hi + 1 == model.config().n_layer;
        let config = LoraConfig {
            rank,
            alpha,
            targets,
            layers: (!full).then_some(lo..hi + 1),
            ..Default::default()
        };
        // The model's shapes cap what the file states (the rank by the narrowest projection).
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
                let data = bytes
                    .get(t.byte_range())
                    .ok_or_else(|| bad(format!("`{name}`: data past the end of the file")))?;
                let mut v = vec![0f32; t.n_elements()];
                match t.ty {
                    GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 | GgmlType::Q8_0 => {
                        engram_kernels::dequantize_row(t.ty, data, &mut v)
                    }
                    other => return Err(bad(format!("`{name}`: type {} not read", other.name()))),
                }
                if v.iter().any(|x| !x.is_finite()) {
                    return Err(bad(format!("`{name}` holds non-finite values")));
                }
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
