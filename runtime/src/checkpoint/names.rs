//! Hugging Face tensor names → llama.cpp's, as `convert_hf_to_gguf.py`'s tensor map does it for
//! the families a checkpoint may hold (llama, qwen2, qwen3, phi3, gemma2, gemma3).
//!
//! Two names depend on the family: Gemma's `post_attention_layernorm` is the norm *after*
//! attention (`post_attention_norm`; its feed-forward input norm is `pre_feedforward_layernorm`),
//! while everywhere else it is the feed-forward input norm (`ffn_norm`). Phi-3 stores fused
//! `qkv_proj` and `gate_up_proj`, which keep llama.cpp's fused names (`attn_qkv`, `ffn_up`).

use crate::model::arch::Architecture;

fn is_gemma(arch: Architecture) -> bool {
    matches!(arch, Architecture::Gemma2 | Architecture::Gemma3)
}

/// `(Hugging Face layer stem, llama.cpp stem)` of an `arch` model's layer tensors.
fn layer_stems(arch: Architecture) -> &'static [(&'static str, &'static str)] {
    const COMMON: [(&str, &str); 11] = [
        ("input_layernorm", "attn_norm"),
        ("self_attn.q_proj", "attn_q"),
        ("self_attn.k_proj", "attn_k"),
        ("self_attn.v_proj", "attn_v"),
        ("self_attn.o_proj", "attn_output"),
        ("self_attn.q_norm", "attn_q_norm"),
        ("self_attn.k_norm", "attn_k_norm"),
        ("mlp.gate_proj", "ffn_gate"),
        ("mlp.up_proj", "ffn_up"),
        ("mlp.down_proj", "ffn_down"),
        ("post_attention_layernorm", "ffn_norm"),
    ];
    const PHI3: [(&str, &str); 6] = [
        ("input_layernorm", "attn_norm"),
        ("self_attn.qkv_proj", "attn_qkv"),
        ("self_attn.o_proj", "attn_output"),
        ("mlp.gate_up_proj", "ffn_up"),
        ("mlp.down_proj", "ffn_down"),
        ("post_attention_layernorm", "ffn_norm"),
    ];
    const GEMMA: [(&str, &str); 13] = [
        ("input_layernorm", "attn_norm"),
        ("self_attn.q_proj", "attn_q"),
        ("self_attn.k_proj", "attn_k"),
        ("self_attn.v_proj", "attn_v"),
        ("self_attn.o_proj", "attn_output"),
        ("self_attn.q_norm", "attn_q_norm"),
        ("self_attn.k_norm", "attn_k_norm"),
        ("mlp.gate_proj", "ffn_gate"),
        ("mlp.up_proj", "ffn_up"),
        ("mlp.down_proj", "ffn_down"),
        ("post_attention_layernorm", "post_attention_norm"),
        ("pre_feedforward_layernorm", "ffn_norm"),
        ("post_feedforward_layernorm", "post_ffw_norm"),
    ];
    match arch {
        Architecture::Phi3 => &PHI3,
        a if is_gemma(a) => &GEMMA,
        _ => &COMMON,
    }
}

/// llama.cpp's name for the Hugging Face tensor `hf` of an `arch` model, or `None`.
pub fn gguf_name(arch: Architecture, hf: &str) -> Option<String> {
    let fixed = match hf {
        "model.embed_tokens.weight" => Some("token_embd.weight"),
        "model.norm.weight" => Some("output_norm.weight"),
        "lm_head.weight" => Some("output.weight"),
        _ => None,
    };
    if let Some(name) = fixed {
        return Some(name.to_string());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (stem, suffix) = rest.rsplit_once('.')?;
    if suffix != "weight" && suffix != "bias" {
        return None;
    }
    let (_, gguf) = layer_stems(arch).iter().find(|(h, _)| *h == stem)?;
    Some(format!("blk.{layer}.{gguf}.{suffix}"))
}

/// The text model's name of the tensor `hf` of an `arch` checkpoint, or `None` for a tensor of
/// another tower. Multimodal Gemma 3 (`Gemma3ForConditionalGeneration`) nests the language model
/// as `language_model.model.…` (or `model.language_model.…` in newer files) beside
/// `vision_tower.…` and `multi_modal_projector.…`, which llama.cpp's converter skips.
pub fn text_model_name(arch: Architecture, hf: &str) -> Option<std::borrow::Cow<'_, str>> {
    use std::borrow::Cow;
    if arch != Architecture::Gemma3 {
        return Some(Cow::Borrowed(hf));
    }
    let tower = ["vision_tower.", "multi_modal_projector.", "vision_model."];
    let inner = hf.strip_prefix("model.").unwrap_or(hf);
    if tower.iter().any(|p| inner.starts_with(p)) {
        return None;
    }
    if let Some(rest) = hf.strip_prefix("language_model.") {
        return Some(Cow::Borrowed(rest));
    }
    if let Some(rest) = hf.strip_prefix("model.language_model.") {
        return Some(Cow::Owned(format!("model.{rest}")));
    }
    Some(Cow::Borrowed(hf))
}

/// Tensors a checkpoint may hold that the graph recomputes (RoPE's inverse frequencies).
pub fn ignored(hf: &str) -> bool {
    hf.ends_with(".rotary_emb.inv_freq")
}

/// Whether llama.cpp's converter adds 1 to the `arch` tensor `gguf` (Gemma's RMSNorm computes
/// `x̂ · (1 + w)` and stores `w`; `Gemma2Model` / `Gemma3Model.modify_tensors` shift every
/// `*norm.weight`, the q/k norms included).
pub fn norm_shifted(arch: Architecture, gguf: &str) -> bool {
    is_gemma(arch) && gguf.ends_with("norm.weight")
}

/// The Hugging Face name of llama.cpp's tensor `gguf` in an `arch` model (the inverse of
/// [`gguf_name`]).
pub fn hf_name(arch: Architecture, gguf: &str) -> Option<String> {
    let fixed = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(name) = fixed {
        return Some(name.to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (stem, suffix) = rest.rsplit_once('.')?;
    let (hf, _) = layer_stems(arch).iter().find(|(_, g)| *g == stem)?;
    Some(format!("model.layers.{layer}.{hf}.{suffix}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for (arch, hf) in [
            (Architecture::Qwen2, "model.embed_tokens.weight"),
            (Architecture::Qwen2, "lm_head.weight"),
            (Architecture::Qwen2, "model.layers.11.self_attn.k_proj.bias"),
            (Architecture::Qwen2, "model.layers.0.mlp.down_proj.weight"),
            (
                Architecture::Qwen3,
                "model.layers.3.self_attn.q_norm.weight",
            ),
            (
                Architecture::Phi3,
                "model.layers.1.self_attn.qkv_proj.weight",
            ),
            (Architecture::Phi3, "model.layers.1.mlp.gate_up_proj.weight"),
            (
                Architecture::Phi3,
                "model.layers.1.post_attention_layernorm.weight",
            ),
            (
                Architecture::Gemma2,
                "model.layers.2.post_attention_layernorm.weight",
            ),
            (
                Architecture::Gemma2,
                "model.layers.2.pre_feedforward_layernorm.weight",
            ),
            (
                Architecture::Gemma3,
                "model.layers.2.post_feedforward_layernorm.weight",
            ),
            (
                Architecture::Gemma3,
                "model.layers.2.self_attn.k_norm.weight",
            ),
        ] {
            let g = gguf_name(arch, hf).unwrap();
            assert_eq!(hf_name(arch, &g).as_deref(), Some(hf), "{g}");
        }
        assert_eq!(
            gguf_name(
                Architecture::Llama,
                "model.layers.0.post_attention_layernorm.weight"
            )
            .as_deref(),
            Some("blk.0.ffn_norm.weight")
        );
        assert_eq!(
            gguf_name(
                Architecture::Gemma2,
                "model.layers.0.post_attention_layernorm.weight"
            )
            .as_deref(),
            Some("blk.0.post_attention_norm.weight")
        );
        assert_eq!(
            gguf_name(Architecture::Llama, "model.layers.0.mlp.experts.0.weight"),
            None
        );
        assert_eq!(
            gguf_name(
                Architecture::Llama,
                "model.layers.0.self_attn.qkv_proj.weight"
            ),
            None
        );
        for (hf, text) in [
            (
                "language_model.model.layers.0.mlp.up_proj.weight",
                Some("model.layers.0.mlp.up_proj.weight"),
            ),
            (
                "model.language_model.norm.weight",
                Some("model.norm.weight"),
            ),
            ("language_model.lm_head.weight", Some("lm_head.weight")),
            (
                "model.embed_tokens.weight",
                Some("model.embed_tokens.weight"),
            ),
            ("vision_tower.vision_model.head.weight", None),
            (
                "model.multi_modal_projector.mm_input_projection_weight",
                None,
            ),
        ] {
            assert_eq!(
                text_model_name(Architecture::Gemma3, hf).as_deref(),
                text,
                "{hf}"
            );
        }
        assert_eq!(
            text_model_name(Architecture::Llama, "vision_tower.x").as_deref(),
            Some("vision_tower.x")
        );
        assert!(norm_shifted(
            Architecture::Gemma3,
            "blk.0.attn_q_norm.weight"
        ));
        assert!(norm_shifted(Architecture::Gemma2, "output_norm.weight"));
        assert!(!norm_shifted(
            Architecture::Qwen3,
            "blk.0.attn_q_norm.weight"
        ));
    }
}
