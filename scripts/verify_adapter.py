#!/usr/bin/env python3
"""Check that engram's LoRA adapter files load in PEFT and in llama.cpp and agree with engram.

Run from .venv-peft (scripts/verify_adapter.sh sets everything up and calls it):

    .venv-peft/bin/python scripts/verify_adapter.py --adapter-dir DIR --engram target/release/engram

DIR is what `cargo run --release --example adapt -- --out DIR` writes: DIR/peft/ (PEFT's
adapter_model.safetensors + adapter_config.json) and DIR/adapter.gguf (llama.cpp's LoRA GGUF).

For each prompt, the last position's logits come from three engines, each without and with the
adapter, all fed the same token ids (engram's tokenization: raw text, special tokens parsed, no BOS):

  engram    `engram logits --prompt P --top V --json [--lora DIR/peft]` (all V logits), and
            once more with `--lora DIR/adapter.gguf` (engram reads both files);
  peft      transformers' fp32 model dequantized from the same GGUF (q/k rows un-permuted by
            transformers), then `PeftModel.from_pretrained(base, DIR/peft)`;
  llama.cpp llama-cpp-python, `Llama(model)` and `Llama(model, lora_path=DIR/adapter.gguf)`,
            n_threads=2, run in the llama.cpp venv ($ENGRAM_LLAMACPP_VENV) by this same file
            in `--worker llamacpp` mode.

Reported per prompt and engine:
  top1          the engine's argmax equals engram's (base and adapted);
  max_dlogit    max |logit - engram's logit| over engram's top-20 ids (base and adapted);
  effect        the adapter's effect, adapted minus base logits, over engram's adapted top-20
                ids: its Pearson correlation with engram's effect and the max abs difference.
The effect is the real test of the adapter files: it does not depend on how each engine rounds
the quantized base (engram and llama.cpp quantize activations to 8 bits for the Q4_1 dots,
transformers runs the dequantized weights in fp32), which moves base logits by up to ~1.

Exit status 1 when, for any engine and prompt, the adapted top-1 differs from engram's while
engram's adapted top-1 margin over its runner-up is > --margin (0.5 logits), or when the effect
correlation is < --min-corr (0.9) on a prompt where engram's effect spans ≥ --min-effect (2.0)
logits over those 20 ids. Below that the effect is comparable to the engines' own rounding
differences (0.2-0.5 logits), so such prompts are reported but not gated one by one; they still
enter the pooled correlation over all prompts, which must be ≥ --min-corr too.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import time

PROMPTS = [
    # Invented facts the adapt example trains (its held-out phrasing and a trained one).
    "The capital city of Veloria is",
    "The capital of Tarsimo is",
    "Q: What is the capital of Ostrevia?\nA:",
    # Public reference prompts the adaptation must leave alone.
    "The capital of France is",
    "The chemical symbol for gold is",
    "Once upon a time",
]

TOPK = 20


# --------------------------------------------------------------------------------------------
# llama.cpp worker: runs in the llama.cpp venv (no torch there), prints one JSON line.
# --------------------------------------------------------------------------------------------
def llamacpp_worker(args):
    import numpy as np
    import llama_cpp

    req = json.load(sys.stdin)
    out = {"llama_cpp_python": llama_cpp.__version__, "base": [], "adapted": []}
    max_len = max(len(t) for t in req["tokens"]) + 8
    for mode, lora in (("base", None), ("adapted", req.get("lora_path"))):
        if mode == "adapted" and not lora:
            continue
        kw = dict(
            model_path=req["model"],
            n_threads=req["threads"],
            n_threads_batch=req["threads"],
            n_ctx=max(64, max_len),
            n_batch=max(64, max_len),
            # llama-cpp-python copies logits into `scores` only with logits_all=True.
            logits_all=True,
            verbose=False,
        )
        if lora:
            kw["lora_path"] = lora
        t0 = time.perf_counter()
        llm = llama_cpp.Llama(**kw)
        out[mode + "_load_s"] = round(time.perf_counter() - t0, 3)
        for toks in req["tokens"]:
            llm.reset()
            llm.eval(toks)
            out[mode].append(np.asarray(llm.scores[llm.n_tokens - 1], dtype=np.float32).tolist())
        # Tokenizer check (informational): llama.cpp's own tokenization, special tokens parsed.
        if mode == "base":
            out["tokenize"] = [
                llm.tokenize(p.encode("utf-8"), add_bos=False, special=True) for p in req["prompts"]
            ]
        del llm
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


# --------------------------------------------------------------------------------------------
# engram
# --------------------------------------------------------------------------------------------
def engram_logits(cmd, model, prompt, threads, lora=None):
    argv = list(cmd) + ["logits", "--model", model, "--threads", str(threads),
                        "--prompt", prompt, "--top", "1000000", "--json"]
    if lora:
        argv += ["--lora", lora]
    r = subprocess.run(argv, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"verify_adapter: {' '.join(argv)} failed ({r.returncode}):\n{r.stderr}")
    line = [l for l in r.stdout.splitlines() if l.strip().startswith("{")][-1]
    d = json.loads(line)
    return d["tokens"], {int(i): float(v) for i, v in d["top"]}


def dense(top, vocab):
    import numpy as np

    v = np.full(vocab, -np.inf, dtype=np.float64)
    for i, x in top.items():
        v[i] = x
    return v


# --------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------
def pearson(a, b):
    import numpy as np

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a = a - a.mean()
    b = b - b.mean()
    d = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / d) if d > 0 else float("nan")


def compare(e_base, e_ad, o_base, o_ad):
    """engram's (e_*) vs another engine's (o_*) full logit vectors for one prompt."""
    import numpy as np

    top_b = np.argsort(-e_base)[:TOPK]
    top_a = np.argsort(-e_ad)[:TOPK]
    res = {
        "top1_base": int(np.argmax(o_base)),
        "top1_base_agrees": bool(int(np.argmax(o_base)) == int(top_b[0])),
        "max_dlogit_base": float(np.max(np.abs(o_base[top_b] - e_base[top_b]))),
    }
    if o_ad is not None:
        e_eff = e_ad[top_a] - e_base[top_a]
        o_eff = o_ad[top_a] - o_base[top_a]
        res.update(
            {
                "top1_adapted": int(np.argmax(o_ad)),
                "top1_adapted_agrees": bool(int(np.argmax(o_ad)) == int(top_a[0])),
                "max_dlogit_adapted": float(np.max(np.abs(o_ad[top_a] - e_ad[top_a]))),
                "effect_corr": pearson(e_eff, o_eff),
                "effect_max_abs_diff": float(np.max(np.abs(e_eff - o_eff))),
                "_e_eff": e_eff.tolist(),
                "_o_eff": o_eff.tolist(),
            }
        )
    return res


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[1:]))
    ap.add_argument("--worker", choices=["llamacpp"], help=argparse.SUPPRESS)
    ap.add_argument("--adapter-dir", help="engram adapter output: DIR/peft/ and DIR/adapter.gguf")
    ap.add_argument("--model", help="the base GGUF (default: $ENGRAM_MODEL)")
    ap.add_argument("--engram", default="engram",
                    help="the engram command, split on spaces (default: engram on PATH)")
    ap.add_argument("--llamacpp-python", default=None,
                    help="python of the llama.cpp venv (default: $ENGRAM_LLAMACPP_VENV/bin/python)")
    ap.add_argument("--engines", default="engram,peft,llamacpp")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", action="append", help="replace the built-in prompts (repeatable)")
    ap.add_argument("--margin", type=float, default=0.5)
    ap.add_argument("--min-corr", type=float, default=0.9)
    ap.add_argument("--min-effect", type=float, default=2.0)
    ap.add_argument("--json-out", help="write the summary here (default: DIR/verify_adapter.json)")
    a = ap.parse_args()

    if a.worker == "llamacpp":
        return llamacpp_worker(a)
    if not a.adapter_dir:
        ap.error("--adapter-dir is required")

    import numpy as np

    model = a.model or os.environ.get("ENGRAM_MODEL")
    if not model or not os.path.isfile(model):
        sys.exit(f"verify_adapter: model not found: {model!r} (pass --model or set ENGRAM_MODEL)")
    model = os.path.abspath(model)
    adir = os.path.abspath(a.adapter_dir)
    peft_dir = os.path.join(adir, "peft")
    gguf_adapter = os.path.join(adir, "adapter.gguf")
    for p in (os.path.join(peft_dir, "adapter_model.safetensors"),
              os.path.join(peft_dir, "adapter_config.json"), gguf_adapter):
        if not os.path.isfile(p):
            sys.exit(f"verify_adapter: missing {p}")
    prompts = a.prompt or PROMPTS
    engines = set(a.engines.split(","))
    engram_cmd = a.engram.split()
    log = lambda *m: print(*m, file=sys.stderr, flush=True)

    # ---- engram: the reference; its token ids feed the other engines --------------------
    log(f"engram: {len(prompts)} prompts x (base, --lora peft/, --lora adapter.gguf)...")
    tokens, e_base, e_ad, e_ad_gguf = [], [], [], []
    vocab = None
    for p in prompts:
        toks, top = engram_logits(engram_cmd, model, p, a.threads)
        vocab = vocab or len(top)
        tokens.append(toks)
        e_base.append(dense(top, vocab))
        _, top = engram_logits(engram_cmd, model, p, a.threads, peft_dir)
        e_ad.append(dense(top, vocab))
        _, top = engram_logits(engram_cmd, model, p, a.threads, gguf_adapter)
        e_ad_gguf.append(dense(top, vocab))
    if not all(np.isfinite(v).all() for v in e_base + e_ad):
        sys.exit("verify_adapter: engram did not print every logit (needs --top >= vocab)")

    other = {}  # engine -> {"base": [vec], "adapted": [vec], ...}

    # ---- transformers + PEFT -------------------------------------------------------------
    versions = {}
    if "peft" in engines:
        import torch
        import transformers
        import peft
        from importlib.metadata import version
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from peft import PeftModel

        versions.update(torch=torch.__version__, transformers=transformers.__version__,
                        peft=peft.__version__, gguf=version("gguf"))
        torch.set_num_threads(a.threads)
        log("transformers: dequantizing the GGUF to fp32...")
        t0 = time.perf_counter()
        mdir, mfile = os.path.split(model)
        base = AutoModelForCausalLM.from_pretrained(mdir, gguf_file=mfile, dtype=torch.float32)
        base.eval()
        load_s = time.perf_counter() - t0
        try:
            tok = AutoTokenizer.from_pretrained(mdir, gguf_file=mfile)
            hf_tokens = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
        except Exception as e:  # informational only
            log(f"transformers tokenizer from GGUF failed: {e}")
            hf_tokens = None

        def run(m):
            outs = []
            with torch.no_grad():
                for t in tokens:
                    ids = torch.tensor([t], dtype=torch.long)
                    outs.append(m(input_ids=ids).logits[0, -1].double().numpy())
            return outs

        hf_base = run(base)
        pm = PeftModel.from_pretrained(base, peft_dir)
        pm.eval()
        hf_ad = run(pm)
        with pm.disable_adapter():
            hf_off = run(pm)
        off_diff = max(float(np.max(np.abs(x - y))) for x, y in zip(hf_base, hf_off))
        other["peft"] = {"base": hf_base, "adapted": hf_ad, "load_s": round(load_s, 2),
                         "tokens_match_engram": (hf_tokens == tokens) if hf_tokens else None,
                         "disable_adapter_max_diff": off_diff}
        del pm, base

    # ---- llama.cpp -----------------------------------------------------------------------
    if "llamacpp" in engines:
        py = a.llamacpp_python or os.path.join(
            os.environ.get("ENGRAM_LLAMACPP_VENV", ".venv-llamacpp"), "bin", "python")
        log(f"llama.cpp: {py} (base, lora_path=adapter.gguf)...")
        req = {"model": model, "lora_path": gguf_adapter, "threads": a.threads,
               "tokens": tokens, "prompts": prompts}
        r = subprocess.run([py, os.path.abspath(__file__), "--worker", "llamacpp"],
                           input=json.dumps(req), capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"verify_adapter: llama.cpp worker failed ({r.returncode}):\n{r.stderr[-4000:]}")
        d = json.loads(r.stdout.strip().splitlines()[-1])
        versions["llama_cpp_python"] = d["llama_cpp_python"]
        other["llamacpp"] = {"base": [np.asarray(x, dtype=np.float64) for x in d["base"]],
                             "adapted": [np.asarray(x, dtype=np.float64) for x in d["adapted"]],
                             "load_s": d.get("adapted_load_s"),
                             "tokens_match_engram": d["tokenize"] == tokens}

    # ---- engram reading its own llama.cpp GGUF export (round trip) -----------------------
    other["engram_gguf"] = {"base": e_base, "adapted": e_ad_gguf}

    # ---- compare -------------------------------------------------------------------------
    failures = []
    per_prompt = []
    pooled = {k: ([], []) for k in other}
    for i, p in enumerate(prompts):
        order = np.argsort(-e_ad[i])
        margin = float(e_ad[i][order[0]] - e_ad[i][order[1]])
        eff = e_ad[i][order[:TOPK]] - e_base[i][order[:TOPK]]
        span = float(eff.max() - eff.min())
        ob = np.argsort(-e_base[i])
        row = {"prompt": p, "tokens": tokens[i],
               "engram": {"top1_base": int(ob[0]), "top1_adapted": int(order[0]),
                          "base_margin": float(e_base[i][ob[0]] - e_base[i][ob[1]]),
                          "adapted_margin": margin, "effect_span": span,
                          "effect_max_abs": float(np.max(np.abs(eff)))}}
        for k, d in other.items():
            c = compare(e_base[i], e_ad[i], d["base"][i], d["adapted"][i] if d["adapted"] else None)
            if "_e_eff" in c:
                pooled[k][0].extend(c.pop("_e_eff"))
                pooled[k][1].extend(c.pop("_o_eff"))
                if not c["top1_adapted_agrees"] and margin > a.margin:
                    failures.append(f"{k}: {p!r}: adapted top-1 {c['top1_adapted']} != engram's "
                                    f"{int(order[0])} (engram margin {margin:.2f})")
                if span >= a.min_effect and not (c["effect_corr"] >= a.min_corr):
                    failures.append(f"{k}: {p!r}: effect correlation {c['effect_corr']:.3f} "
                                    f"< {a.min_corr}")
            row[k] = c
        if "peft" in other and "llamacpp" in other and other["llamacpp"]["adapted"]:
            # The two other engines against each other, on the same ids.
            pe = other["peft"]["adapted"][i][order[:TOPK]] - other["peft"]["base"][i][order[:TOPK]]
            le = (other["llamacpp"]["adapted"][i][order[:TOPK]]
                  - other["llamacpp"]["base"][i][order[:TOPK]])
            row["peft_vs_llamacpp"] = {"effect_corr": pearson(pe, le),
                                       "effect_max_abs_diff": float(np.max(np.abs(pe - le)))}
        per_prompt.append(row)
    pooled_corr = {k: pearson(x, y) for k, (x, y) in pooled.items() if x}
    for k, c in pooled_corr.items():
        if not (c >= a.min_corr):
            failures.append(f"{k}: pooled effect correlation {c:.3f} < {a.min_corr}")

    # ---- report --------------------------------------------------------------------------
    names = {"peft": "PEFT", "llamacpp": "llama.cpp", "engram_gguf": "engram(.gguf)"}
    print(f"\n{'prompt':<42}{'engine':<15}{'top1 b/a':>9}{'max|Δ| b':>10}{'max|Δ| a':>10}"
          f"{'eff corr':>10}{'eff max|Δ|':>11}{'eff span':>10}{'margin':>8}")
    for row in per_prompt:
        for k in other:
            c = row[k]
            ok = lambda b: "y" if b else "N"
            print(f"{row['prompt'][:40]!r:<42}{names[k]:<15}"
                  f"{ok(c['top1_base_agrees']) + '/' + ok(c.get('top1_adapted_agrees')):>9}"
                  f"{c['max_dlogit_base']:>10.3f}{c.get('max_dlogit_adapted', float('nan')):>10.3f}"
                  f"{c.get('effect_corr', float('nan')):>10.4f}"
                  f"{c.get('effect_max_abs_diff', float('nan')):>11.3f}"
                  f"{row['engram']['effect_span']:>10.2f}{row['engram']['adapted_margin']:>8.2f}")
        if "peft_vs_llamacpp" in row:
            c = row["peft_vs_llamacpp"]
            print(f"{'':<42}{'PEFT~llama.cpp':<15}{'':>29}{c['effect_corr']:>10.4f}"
                  f"{c['effect_max_abs_diff']:>11.3f}")
    print("pooled effect correlation: " + ", ".join(f"{names[k]} {c:.4f}" for k, c in pooled_corr.items()))
    for k, d in other.items():
        if d.get("tokens_match_engram") is not None:
            print(f"{names[k]} tokenizer matches engram's ids: {d['tokens_match_engram']}")
    summary = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": model,
        "adapter_dir": adir,
        "threads": a.threads,
        "versions": versions,
        "thresholds": {"margin": a.margin, "min_corr": a.min_corr, "min_effect": a.min_effect,
                       "topk": TOPK},
        "engines": {k: {kk: vv for kk, vv in d.items() if kk not in ("base", "adapted")}
                    for k, d in other.items()},
        "pooled_effect_corr": pooled_corr,
        "prompts": per_prompt,
        "failures": failures,
        "ok": not failures,
    }
    out = a.json_out or os.path.join(adir, "verify_adapter.json")
    with open(out, "w") as f:
        json.dump(summary, f, indent=1)
    print(f"summary: {out}")
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        sys.exit(1)
    print("OK: PEFT and llama.cpp load engram's adapter files and agree with engram")


if __name__ == "__main__":
    main()
