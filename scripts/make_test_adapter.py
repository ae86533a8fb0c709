#!/usr/bin/env python3
"""Write a random LoRA adapter (non-zero A and B) in both of engram's adapter layouts, without
engram: DIR/peft/ through PEFT's own `save_pretrained`, and DIR/adapter.gguf through the `gguf`
package, with q/k `lora_b` rows permuted into the GGUF model's order the way llama.cpp's
converter permutes q/k weights. Lets scripts/verify_adapter.py's PEFT and llama.cpp halves be
tested on their own, and checks that engram reads adapters it did not write:

    .venv-peft/bin/python scripts/make_test_adapter.py --model M.gguf --out DIR
    scripts/verify_adapter.sh --adapter-dir DIR
"""

import argparse
import os

import numpy as np


def permute_hf_to_gguf(w, n_head):
    """llama.cpp convert_hf_to_gguf's LlamaModel.permute, on the output rows of `w`."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=os.environ.get("ENGRAM_MODEL"), required=False)
    ap.add_argument("--out", required=True)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=16.0)
    ap.add_argument("--targets", default="q_proj,k_proj,v_proj,o_proj,up_proj,down_proj")
    ap.add_argument("--std", type=float, default=0.05,
                    help="std of the random A and B entries (large enough for effects of a few logits)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    import torch
    import gguf
    from transformers import AutoModelForCausalLM
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(a.seed)
    mdir, mfile = os.path.split(os.path.abspath(a.model))
    base = AutoModelForCausalLM.from_pretrained(mdir, gguf_file=mfile, dtype=torch.float32)
    cfg = base.config
    model = get_peft_model(base, LoraConfig(r=a.rank, lora_alpha=a.alpha, lora_dropout=0.0,
                                            target_modules=a.targets.split(","), bias="none",
                                            task_type="CAUSAL_LM"))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_A" in n or "lora_B" in n:
                p.normal_(0.0, a.std)
    os.makedirs(a.out, exist_ok=True)
    model.save_pretrained(os.path.join(a.out, "peft"))

    w = gguf.GGUFWriter(os.path.join(a.out, "adapter.gguf"), "llama")
    w.add_string("general.type", "adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", a.alpha)
    gguf_proj = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v",
                 "o_proj": "attn_output", "gate_proj": "ffn_gate", "up_proj": "ffn_up",
                 "down_proj": "ffn_down"}
    n = 0
    for name, p in model.named_parameters():
        if "lora_A" not in name:
            continue
        # base_model.model.model.layers.{i}.{self_attn|mlp}.{proj}.lora_A.default.weight
        parts = name.split(".")
        layer, proj = int(parts[4]), parts[6]
        la = p.detach().numpy().astype(np.float32)  # (r, n_in)  = ggml [n_in, r]
        lb = dict(model.named_parameters())[name.replace("lora_A", "lora_B")]
        lb = lb.detach().numpy().astype(np.float32)  # (n_out, r) = ggml [r, n_out]
        if proj == "q_proj":
            lb = permute_hf_to_gguf(lb, cfg.num_attention_heads)
        elif proj == "k_proj":
            lb = permute_hf_to_gguf(lb, cfg.num_key_value_heads)
        stem = f"blk.{layer}.{gguf_proj[proj]}.weight"
        w.add_tensor(stem + ".lora_a", np.ascontiguousarray(la))
        w.add_tensor(stem + ".lora_b", np.ascontiguousarray(lb))
        n += 1
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {n} LoRA pairs (r={a.rank}, alpha={a.alpha}) to {a.out}/peft and {a.out}/adapter.gguf")


if __name__ == "__main__":
    main()
