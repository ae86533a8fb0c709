#!/usr/bin/env python3
"""llama.cpp's outputs on SmolLM2-135M re-quantized by llama.cpp's own quantizer: the reference
`tests/kquant_parity.rs` compares engram against.

Input: an F32 GGUF of SmolLM2 written by engram (`cargo run --release --example export_f32 --
OUT.gguf`; its weights are the dequantized Q4_1 model, so every type below quantizes the same
weights). For each of Q4_K_M, Q5_K_M, Q6_K and Q8_0 the script

1. quantizes it with `llama_cpp.llama_model_quantize` into CACHE_DIR (reused when present;
   never committed: 100-150 MB each);
2. runs the prompts of /work/shared/reference/logits_public.json (same tokenization rules as
   that file: add_bos=False, special=True) and records llama.cpp's token ids, the top-20
   [id, logit] pairs and the logsumexp at the last prompt position, and up to 16 greedy
   continuation ids (stopping at id 2);
3. records the tensor-type histogram of the file llama.cpp wrote (what the fall-backs were).

Writes one small JSON (default tests/data/kquant_reference.json).

    /work/venv-llamacpp/bin/python scripts/kquant_reference.py \\
        --f32 ~/.cache/engram/kquant/SmolLM2-135M-Instruct.F32.gguf \\
        --cache ~/.cache/engram/kquant --threads 2
"""

import argparse
import ctypes
import hashlib
import json
import math
import os
import sys
from collections import Counter

import numpy as np
import llama_cpp

from llamacpp_plain import no_extra_buffer_types

# llama.h's `enum llama_ftype`.
FTYPES = {
    "Q4_K_M": 15,
    "Q5_K_M": 17,
    "Q6_K": 18,
    "Q8_0": 7,
}
# ggml's `enum ggml_type` names, for the histogram.
GGML_TYPE_NAMES = {
    0: "f32", 1: "f16", 2: "q4_0", 3: "q4_1", 6: "q5_0", 7: "q5_1", 8: "q8_0", 10: "q2_K",
    11: "q3_K", 12: "q4_K", 13: "q5_K", 14: "q6_K", 20: "iq4_nl", 30: "bf16",
}
GREEDY_TOKENS = 16
TOP_K = 20


def quantize(f32_path, out_path, ftype, threads):
    if os.path.exists(out_path):
        return
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads
    tmp = out_path + ".tmp"
    rc = llama_cpp.llama_model_quantize(
        f32_path.encode(), tmp.encode(), ctypes.byref(params)
    )
    if rc != 0:
        sys.exit(f"llama_model_quantize({ftype}) failed: {rc}")
    os.replace(tmp, out_path)


def tensor_types(path):
    """Histogram of tensor types, read with the gguf package llama-cpp-python vendors, else
    with a minimal reader of the GGUF v3 header."""
    with open(path, "rb") as f:
        data = f.read(64 << 20)
    import struct

    off = 0

    def take(fmt):
        nonlocal off
        v = struct.unpack_from("<" + fmt, data, off)
        off += struct.calcsize("<" + fmt)
        return v[0] if len(v) == 1 else v

    def string():
        nonlocal off
        n = take("Q")
        s = data[off:off + n]
        off += n
        return s

    def value(t):
        sizes = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q",
                 11: "q", 12: "d"}
        if t in sizes:
            return take(sizes[t])
        if t == 8:
            return string()
        if t == 9:
            et, n = take("I"), take("Q")
            for _ in range(n):
                value(et)
            return None
        raise ValueError(f"metadata type {t}")

    assert data[:4] == b"GGUF"
    off = 8
    n_tensors, n_kv = take("Q"), take("Q")
    for _ in range(n_kv):
        string()
        value(take("I"))
    hist = Counter()
    for _ in range(n_tensors):
        string()
        n_dims = take("I")
        for _ in range(n_dims):
            take("Q")
        hist[GGML_TYPE_NAMES.get(take("I"), "?")] += 1
        take("Q")
    return dict(sorted(hist.items()))


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def run_prompts(path, prompts, threads):
    llm = llama_cpp.Llama(model_path=path, n_ctx=256, n_threads=threads, n_batch=256,
                          logits_all=True, verbose=False)
    cases = []
    for prompt in prompts:
        tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
        llm.reset()
        llm.eval(tokens)
        logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64)
        top = np.argsort(-logits, kind="stable")[:TOP_K]
        m = logits.max()
        lse = m + math.log(np.exp(logits - m).sum())
        greedy = []
        tok = int(top[0])
        for _ in range(GREEDY_TOKENS):
            greedy.append(tok)
            if tok == 2:
                break
            llm.eval([tok])
            tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        cases.append({
            "prompt": prompt,
            "tokens": tokens,
            "top20": [[int(i), float(logits[i])] for i in top],
            "logsumexp": lse,
            "greedy": greedy,
        })
    return cases


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--f32", required=True, help="F32 GGUF written by engram (export_f32)")
    ap.add_argument("--cache", required=True, help="directory for the quantized GGUFs")
    ap.add_argument("--prompts", default="/work/shared/reference/logits_public.json")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests",
                                                  "data", "kquant_reference.json"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--types", default=",".join(FTYPES))
    args = ap.parse_args()
    no_extra_buffer_types()

    with open(args.prompts) as f:
        prompts = [c["prompt"] for c in json.load(f)]
    base = os.path.basename(args.f32).replace(".F32.gguf", "")
    out = {
        "producer": f"llama-cpp-python {llama_cpp.__version__} (llama.cpp CPU, extra buffer "
                    f"types off), {args.threads} threads; scripts/kquant_reference.py",
        "f32_sha256": sha256(args.f32),
        "models": {},
    }
    for name in args.types.split(","):
        path = os.path.join(args.cache, f"{base}.{name}.gguf")
        quantize(args.f32, path, FTYPES[name], args.threads)
        print(f"{name}: {path}", file=sys.stderr)
        out["models"][name] = {
            "file": os.path.basename(path),
            "sha256": sha256(path),
            "tensor_types": tensor_types(path),
            "cases": run_prompts(path, prompts, args.threads),
        }
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
