#!/usr/bin/env python3
"""llama.cpp's outputs on engram's seeded tiny models of every family: the reference
`tests/arch_parity.rs` compares engram against.

Input: the directory `cargo run --example arch_models -- DIR` writes (one GGUF per case,
random weights, F32, the byte vocabulary of `engram::harness::synthetic` with four merges). For
each case and each prompt (tokenized by llama.cpp: the ids are recorded) the script records llama.cpp's top-20 [id, logit]
pairs at the last prompt position, the top-2 margin, and 8 greedy continuation ids (with the
top-2 margin after each, i.e. of the next id: the test decodes them through engram's KV cache
and compares its choices where llama.cpp's are clear); and the
file's sha256, which the test checks against the generator's bytes.

    cargo run --example arch_models -- /tmp/arch_models
    /work/venv-llamacpp/bin/python scripts/arch_reference.py --dir /tmp/arch_models

Writes tests/data/arch_reference.json.
"""

import argparse
import ctypes
import hashlib
import json
import os
import re
import sys

import numpy as np
import llama_cpp

from llamacpp_plain import no_extra_buffer_types

# engram::harness::synthetic_arch: ARCH_CASES (F32), then QUANT_CASES ({name}.{type}).
CASES = ["llama3", "llama_linear", "mistral_swa", "qwen2", "qwen3", "phi3", "gemma2", "gemma3",
         "phi3_longrope", "phi3_shortrope", "llama_yarn",
         "qwen2.q8_0", "phi3.q4_1", "gemma2.q4_0"]
VOCABS = ["spm", "llama_bpe", "qwen2_bpe"]
PROMPTS = [
    "The capital of France is",
    "fn main() { println!(\"hi\"); }",
    "1, 2, 3, 5, 8, 13,",
]
TOP_K = 20
GREEDY = 8
VERBOSE = os.environ.get("VERBOSE") == "1"


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def run_case(path, threads):
    llm = llama_cpp.Llama(model_path=path, n_ctx=64, n_threads=threads, n_batch=64,
                          logits_all=True, verbose=VERBOSE, flash_attn=False)
    out = []
    for prompt in PROMPTS:
        tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=False)
        llm.reset()
        llm.eval(tokens)
        logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64)
        top = np.argsort(-logits, kind="stable")[:TOP_K]
        greedy, margins = [], []
        tok = int(top[0])
        for _ in range(GREEDY):
            greedy.append(tok)
            llm.eval([tok])
            step = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64)
            best = np.argsort(-step, kind="stable")[:2]
            margins.append(float(step[best[0]] - step[best[1]]))
            tok = int(best[0])
        out.append({
            "prompt": prompt,
            "tokens": tokens,
            "top20": [[int(i), float(logits[i])] for i in top],
            "margin": float(logits[top[0]] - logits[top[1]]),
            "greedy": greedy,
            "greedy_margins": margins,
        })
    return out


def run_vocab(path):
    """Token ids of every text, with the vocabulary's BOS/EOS rules (llama.cpp's
    add_special), special tokens as text and parsed; and each id's piece (detokenized alone)."""
    llm = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=VERBOSE)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)

    def detokenize(ids):
        """llama.cpp's llama_detokenize (remove_special, unparse_special false): what strips
        the SentencePiece space prefix."""
        arr = (llama_cpp.llama_token * max(1, len(ids)))(*ids)
        buf = ctypes.create_string_buffer(4096)
        n = llama_cpp.llama_detokenize(vocab, arr, len(ids), buf, 4096, False, False)
        assert n >= 0, n
        return buf.raw[:n].decode("utf-8", errors="replace")

    # engram::harness::synthetic_vocab::TOKENIZER_TEXTS, as the arch_models example wrote them.
    with open(os.path.join(os.path.dirname(path), "tokenizer_texts.json"), encoding="utf-8") as f:
        texts = json.load(f)
    out = []
    for text in texts:
        raw = llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)
        parsed = llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
        out.append({
            "text": text,
            "ids": raw,
            "ids_special": parsed,
            "detokenized": detokenize(raw[1:] if raw and raw[0] == llm.token_bos() else raw),
        })
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", required=True, help="directory of the arch_models example")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests",
                                                  "data", "arch_reference.json"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    no_extra_buffer_types()
    result = {
        "producer": f"llama-cpp-python {llama_cpp.__version__} (llama.cpp CPU, extra buffer "
                    f"types off, flash attention off, f16 KV cache); scripts/arch_reference.py",
        "cases": {},
    }
    for name in CASES:
        path = os.path.join(args.dir, f"{name}.gguf")
        print(f"{name}: {path}", file=sys.stderr)
        result["cases"][name] = {"sha256": sha256(path), "prompts": run_case(path, args.threads)}
    result["vocabs"] = {}
    for name in VOCABS:
        path = os.path.join(args.dir, f"vocab_{name}.gguf")
        print(f"vocab {name}: {path}", file=sys.stderr)
        result["vocabs"][name] = {"sha256": sha256(path), "texts": run_vocab(path)}
    # One line per number list (ids, [id, logit] pairs): small and reviewable.
    text = json.dumps(result, indent=1, ensure_ascii=False)
    text = re.sub(r"\[\s+([-\d.e, \n]+?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text)
    text = re.sub(r"\[\s+((?:\[[^\[\]]*\],?\s*)+)\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text)
    with open(args.out, "w") as f:
        f.write(text + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
