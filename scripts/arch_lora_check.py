#!/usr/bin/env python3
"""An engram-trained LoRA adapter on a non-llama family, run by llama.cpp: its logits against
engram's (`engram logits --lora`). A manual check (the adapter comes from training, so it is
not pinned by a seed like the models of scripts/arch_reference.py); figures in docs/MODELS.md.

    cargo run --example arch_models -- /tmp/arch_models
    printf '{"prompt":"Zorbia:","completion":" Qel"}\\n{"prompt":"Vantor:","completion":" Ixa"}\\n' > /tmp/facts.jsonl
    for a in qwen2 gemma2; do
      engram train --model /tmp/arch_models/$a.gguf --data /tmp/facts.jsonl --out /tmp/lora_$a \\
        --rank 4 --targets all-linear --epochs 3 --seq-len 32 --lr 0.05 --threads 1
      engram logits --model /tmp/arch_models/$a.gguf --lora /tmp/lora_$a/adapter.gguf \\
        --prompt "Zorbia:" --json --top 5 --threads 1 > /tmp/eng_$a.json
    done
    /work/venv-llamacpp/bin/python scripts/arch_lora_check.py qwen2 gemma2
"""

import json
import sys

import numpy as np
import llama_cpp

from llamacpp_plain import no_extra_buffer_types


def main():
    no_extra_buffer_types()
    for a in sys.argv[1:]:
        eng = json.load(open(f"/tmp/eng_{a}.json"))
        llm = llama_cpp.Llama(model_path=f"/tmp/arch_models/{a}.gguf",
                              lora_path=f"/tmp/lora_{a}/adapter.gguf", n_ctx=64, n_threads=2,
                              logits_all=True, verbose=False, flash_attn=False)
        llm.eval(eng["tokens"])
        logits = np.array(llm.scores[llm.n_tokens - 1])
        top = np.argsort(-logits)[:5]
        print(a, "llama.cpp", [[int(i), round(float(logits[i]), 4)] for i in top])
        print(a, "engram   ", [[i, round(l, 4)] for i, l in eng["top"]])
        print(a, "max |Δlogit| over engram's top-5",
              max(abs(logits[i] - l) for i, l in eng["top"]))


if __name__ == "__main__":
    main()
