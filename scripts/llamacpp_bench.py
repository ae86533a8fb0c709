#!/usr/bin/env python3
"""Measure llama.cpp prefill and decode throughput through llama-cpp-python.

Called by scripts/compare_llamacpp.sh (which owns the venv); usable on its own:

    .venv-llamacpp/bin/python scripts/llamacpp_bench.py --model M.gguf --threads 2

Prefill: after `llm.reset()`, time one `llm.eval(prompt)` over exactly P tokens.
Decode:  then generate G tokens one at a time, greedy (argmax of the last logits),
         each with `llm.eval([tok])`; EOS does not stop it, so every run does G steps.
One warm-up run is discarded; the mean and sample sd over the repeats are reported (as
`engram bench` does).
Prints one JSON object on stdout.
"""

import argparse
import json
import statistics
import sys
import time

import numpy as np
import llama_cpp

from llamacpp_plain import no_extra_buffer_types

# Plain English prose; repeated and cut to exactly P tokens, so every run sees the same ids.
PROMPT_TEXT = (
    "The history of the printing press begins in the fifteenth century, when Johannes "
    "Gutenberg combined movable metal type, oil-based ink and a wooden screw press. Books "
    "became cheaper, literacy spread across Europe, and ideas travelled faster than ever "
    "before. Scholars exchanged letters, merchants kept printed ledgers, and cities built "
    "libraries to hold the growing flood of pamphlets, maps and almanacs. "
)


def prompt_tokens(llm, n):
    toks = llm.tokenize(PROMPT_TEXT.encode("utf-8"), add_bos=True)
    body = llm.tokenize(PROMPT_TEXT.encode("utf-8"), add_bos=False)
    while len(toks) < n:
        toks += body
    return toks[:n]


def one_run(llm, prompt, gen):
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(prompt)
    t1 = time.perf_counter()
    tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    t2 = time.perf_counter()
    for _ in range(gen):
        llm.eval([tok])
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    t3 = time.perf_counter()
    return len(prompt) / (t1 - t0), gen / (t3 - t2)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--gen-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--extra-bufts",
        action="store_true",
        help="keep llama.cpp's extra CPU buffer types (AMX, repacking); off by default",
    )
    a = ap.parse_args()

    if not a.extra_bufts:
        no_extra_buffer_types()  # scripts/llamacpp_plain.py: why
    n_ctx = a.prompt_tokens + a.gen_tokens + 16
    t_load = time.perf_counter()
    llm = llama_cpp.Llama(
        model_path=a.model,
        n_threads=a.threads,
        n_threads_batch=a.threads,
        n_ctx=n_ctx,
        n_batch=max(512, a.prompt_tokens),  # the whole prompt in one batch
        verbose=False,
    )
    load_s = time.perf_counter() - t_load
    prompt = prompt_tokens(llm, a.prompt_tokens)

    one_run(llm, prompt, a.gen_tokens)  # warm-up: page in the mmap, warm caches
    prefill, decode = [], []
    for _ in range(a.repeats):
        p, d = one_run(llm, prompt, a.gen_tokens)
        prefill.append(p)
        decode.append(d)

    json.dump(
        {
            "engine": "llama.cpp",
            "llama_cpp_python": llama_cpp.__version__,
            "threads": a.threads,
            "prompt_tokens": a.prompt_tokens,
            "gen_tokens": a.gen_tokens,
            "repeats": a.repeats,
            "load_s": round(load_s, 3),
            "prefill_tok_s": round(statistics.mean(prefill), 2),
            "prefill_sd": round(statistics.stdev(prefill), 2) if len(prefill) > 1 else 0.0,
            "decode_tok_s": round(statistics.mean(decode), 2),
            "decode_sd": round(statistics.stdev(decode), 2) if len(decode) > 1 else 0.0,
            "prefill_runs": [round(x, 2) for x in prefill],
            "decode_runs": [round(x, 2) for x in decode],
        },
        sys.stdout,
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
