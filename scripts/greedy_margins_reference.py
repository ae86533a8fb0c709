#!/usr/bin/env python3
"""llama.cpp's own margin at every greedy step of the prompts in
/work/shared/reference/logits_public.json, on the same SmolLM2-135M-Instruct Q4_1 file: the
reference `tests/parity.rs` uses to tell a divergence from a near-tie.

That file records llama.cpp's greedy continuation ids but only the first step's logits. Where
llama.cpp's own top two logits at a later step are within a rounding's reach of each other,
either token is a correct forward pass's answer, and everything after it may differ. This
script replays the same greedy continuation through llama-cpp-python (same tokenization rules:
add_bos=False, special=True), checks that it reproduces the recorded ids, and writes, per
prompt, `greedy`, `margins` (top-1 minus top-2 logit at each step) and `top` (the best
TOP_K [id, logit] pairs at each step) to one small JSON
(default tests/data/greedy_margins.json).

    /work/venv-llamacpp/bin/python scripts/greedy_margins_reference.py \\
        --model ~/.cache/engram/models/SmolLM2-135M-Instruct.Q4_1.gguf --threads 2
"""

import argparse
import json
import os
import sys

import numpy as np
import llama_cpp

from llamacpp_plain import no_extra_buffer_types

# [id, logit] pairs kept per step: enough to hold every token within a near-tie of the best.
TOP_K = 5


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--reference", default="/work/shared/reference/logits_public.json")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests",
                                                  "data", "greedy_margins.json"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    no_extra_buffer_types()
    with open(args.reference) as f:
        reference = json.load(f)
    llm = llama_cpp.Llama(model_path=args.model, n_ctx=256, n_threads=args.threads,
                          n_batch=256, logits_all=True, verbose=False)
    cases = []
    for case in reference:
        tokens = llm.tokenize(case["prompt"].encode("utf-8"), add_bos=False, special=True)
        if tokens != case["tokens"]:
            sys.exit(f"{case['prompt']!r}: tokens {tokens} differ from the reference's")
        llm.reset()
        llm.eval(tokens)
        greedy, tops, margins = [], [], []
        for _ in range(len(case["greedy"])):
            logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64)
            top = np.argsort(-logits, kind="stable")[:TOP_K]
            tok = int(top[0])
            greedy.append(tok)
            tops.append([[int(i), float(logits[i])] for i in top])
            margins.append(float(logits[top[0]] - logits[top[1]]))
            if tok == 2:
                break
            llm.eval([tok])
        if greedy != case["greedy"]:
            sys.exit(f"{case['prompt']!r}: greedy {greedy} differs from the reference's "
                     f"{case['greedy']}")
        cases.append({"prompt": case["prompt"], "greedy": greedy, "margins": margins,
                      "top": tops})
    out = {
        "producer": f"llama-cpp-python {llama_cpp.__version__} (llama.cpp CPU, extra buffer "
                    f"types off), {args.threads} threads; scripts/greedy_margins_reference.py",
        "cases": cases,
    }
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
