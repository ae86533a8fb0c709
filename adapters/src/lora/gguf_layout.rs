//! A llama.cpp LoRA GGUF's layout, decoded and checked against the model's shapes before
//! anything is allocated: adapter metadata, one rank for every tensor (capped by the model's
//! widest projection), a contiguous range of the model's layers, every tensor's dims and type.
//!
//! Needs only the GGUF parser and the kernels' dequantizers (reached through the parent
//! module's `Gguf` and `GgmlType`), so the fuzz crate compiles this file directly and fuzzes the
//! code `Lora::load_llama_cpp` runs.

use std::ops::Range;

use super::{GgmlType, Gguf};

/// Largest `|alpha|` a LoRA file may state (as [`super::MAX_ALPHA`] for PEFT files).
const MAX_ALPHA: f32 = 1e6;

/// The widths of the model's projections, by their GGUF names (`attn_q`, ..., `ffn_down`).
#[derive(Clone, Debug)]
pub struct ProjShapes {
    /// Blocks in the model.
    pub n_layer: usize,
    /// `(gguf name, n_in, n_out)` of each projection.
    pub projections: Vec<(&'static str, usize, usize)>,
}

/// What a checked LoRA GGUF adapts.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraGgufLayout {
    /// The rank shared by every tensor.
    pub rank: usize,
    /// `adapter.lora.alpha`.
    pub alpha: f32,
    /// Adapted projections' GGUF names, in the model's order.
    pub targets: Vec<&'static str>,
    /// Adapted blocks.
    pub layers: Range<usize>,
}

/// Checks `gguf` (parsed from a file of `file_len` bytes) as a LoRA adapter for a model of
/// `shapes`; the error says what is wrong (the caller adds the path).
pub fn lora_gguf_layout(
    gguf: &Gguf,
    file_len: usize,
    shapes: &ProjShapes,
) -> Result<LoraGgufLayout, String> {
    let meta = |k: &str| gguf.get_str(k).map_err(|e| e.to_string());
    if meta("general.type")? != "adapter" || meta("adapter.type")? != "lora" {
        return Err("not a LoRA adapter (general.type / adapter.type)".into());
    }
    let alpha = gguf
        .get_f32("adapter.lora.alpha")
        .map_err(|e| e.to_string())?;
    if !alpha.is_finite() || alpha.abs() > MAX_ALPHA {
        return Err(format!(
            "adapter.lora.alpha {alpha}: a finite value of magnitude at most {MAX_ALPHA}"
        ));
    }
    let mut targets: Vec<&'static str> = Vec::new();
    let mut layers: Vec<usize> = Vec::new();
    let mut rank = None;
    for t in gguf.tensors() {
        let Some(stem) = t
            .name
            .strip_suffix(".weight.lora_a")
            .or_else(|| t.name.strip_suffix(".weight.lora_b"))
        else {
            continue;
        };
        let mut parts = stem.splitn(3, '.');
        let (Some("blk"), Some(layer), Some(proj)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!(
                "`{}`: only blk.N.<proj> tensors are supported",
                t.name
            ));
        };
        let layer: usize = layer
            .parse()
            .map_err(|_| format!("`{}`: bad layer", t.name))?;
        if layer >= shapes.n_layer {
            return Err(format!(
                "`{}`: layer {layer} is outside the model's {} blocks",
                t.name, shapes.n_layer
            ));
        }
        let &(name, n_in, n_out) = shapes
            .projections
            .iter()
            .find(|(n, _, _)| *n == proj)
            .ok_or_else(|| format!("`{}`: unknown projection", t.name))?;
        let is_a = t.name.ends_with("lora_a");
        let r = match (t.dims.as_slice(), is_a) {
            (&[i, r], true) if i == n_in => r,
            (&[r, o], false) if o == n_out => r,
            _ => {
                let want = if is_a {
                    "[n_in, rank]"
                } else {
                    "[rank, n_out]"
                };
                return Err(format!(
                    "`{}`: dims {:?}, the model needs {want} with n_in {n_in}, n_out {n_out}",
                    t.name, t.dims
                ));
            }
        };
        if rank.is_some_and(|have| have != r) {
            return Err(format!(
                "`{}`: rank {r}, other tensors have {}",
                t.name,
                rank.unwrap_or(0)
            ));
        }
        // The roomiest projection bounds the rank, as for every LoRA config.
        let max = shapes
            .projections
            .iter()
            .map(|&(_, i, o)| i.min(o))
            .max()
            .unwrap_or(0);
        if r == 0 || r > max {
            return Err(format!(
                "`{}`: LoRA rank {r} is outside 1..={max} (the model's widest projection)",
                t.name
            ));
        }
        rank = Some(r);
        if !matches!(
            t.ty,
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 | GgmlType::Q8_0
        ) {
            return Err(format!("`{}`: type {} not read", t.name, t.ty.name()));
        }
        if t.byte_range().end > file_len {
            return Err(format!("`{}`: data past the end of the file", t.name));
        }
        if !targets.contains(&name) {
            targets.push(name);
        }
        if !layers.contains(&layer) {
            layers.push(layer);
        }
    }
    let rank = rank.ok_or("no lora_a tensors")?;
    let (lo, hi) = (
        layers.iter().copied().min().unwrap_or(0),
        layers.iter().copied().max().unwrap_or(0),
    );
    if hi - lo + 1 != layers.len() {
        return Err(format!(
            "adapted layers {layers:?} are not a range of the model's"
        ));
    }
    // Every (layer, projection) pair must have both factors: a rectangular set.
    for l in lo..=hi {
        for p in &targets {
            for ab in ["a", "b"] {
                let name = format!("blk.{l}.{p}.weight.lora_{ab}");
                if gguf.tensor(&name).is_none() {
                    return Err(format!("missing tensor `{name}`"));
                }
            }
        }
    }
    targets.sort_by_key(|t| shapes.projections.iter().position(|(n, _, _)| n == t));
    Ok(LoraGgufLayout {
        rank,
        alpha,
        targets,
        layers: lo..hi + 1,
    })
}

/// The values of tensor `name` of a checked layout (its type and range were checked by
/// [`lora_gguf_layout`]); non-finite values are an error.
pub fn lora_tensor_values(gguf: &Gguf, bytes: &[u8], name: &str) -> Result<Vec<f32>, String> {
    let t = gguf
        .tensor(name)
        .ok_or_else(|| format!("missing tensor `{name}`"))?;
    let data = bytes
        .get(t.byte_range())
        .ok_or_else(|| format!("`{name}`: data past the end of the file"))?;
    if !matches!(
        t.ty,
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 | GgmlType::Q8_0
    ) {
        return Err(format!("`{name}`: type {} not read", t.ty.name()));
    }
    let mut v = vec![0f32; t.n_elements()];
    engram_kernels::dequantize_row(t.ty, data, &mut v);
    match v.iter().all(|x| x.is_finite()) {
        true => Ok(v),
        false => Err(format!("`{name}` holds non-finite values")),
    }
}
