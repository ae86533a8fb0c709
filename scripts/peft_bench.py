#!/usr/bin/env python3
"""LoRA training throughput and peak memory of PyTorch + PEFT on the CPU, on engram's model.

Run from .venv-peft (scripts/compare_peft.sh sets it up and runs this next to
`engram train-bench` with the same shapes):

    .venv-peft/bin/python scripts/peft_bench.py --model M.gguf --rank 8 --targets q,v

The model is the same GGUF engram maps, dequantized to fp32 by transformers (there is no
other checkpoint offline); PEFT adds LoRA (A random, B zero, alpha = 2r, no dropout) to the
chosen projections. Each step mirrors engram's train-bench: `batch` random token sequences of
`seq_len + 1` ids (fixed seed), the model runs the first `seq_len`, the causal-LM loss covers
all `seq_len` next-token targets, backward, AdamW (lr 1e-4) step. `warmup` untimed steps, then
`steps` timed ones; tokens/s = steps * batch * seq_len / wall seconds (also reported per
CPU-second of the process, which a machine shared with other jobs disturbs less).

Memory: `peak_rss_bytes` is the process's peak resident set (ru_maxrss, = VmHWM), the figure
engram's train-bench reports for itself; it includes transformers' GGUF dequantization at load.
`train_peak_rss_bytes` is the peak during training only: the high-water mark is reset
(/proc/self/clear_refs) after the model and optimizer are built.
Prints one JSON object on stdout (progress on stderr).
"""

import argparse
import gc
import json
import os
import resource
import sys
import time

TARGETS = {
    "q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj",
    "gate": "gate_proj", "up": "up_proj", "down": "down_proj",
}


def vm(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return None


def reset_peak_rss():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=os.environ.get("ENGRAM_MODEL"))
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=None, help="default: 2 * rank")
    ap.add_argument("--targets", default="q,v",
                    help="comma list of q,k,v,o,gate,up,down, or 'all' (all-linear)")
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if not a.model or not os.path.isfile(a.model):
        sys.exit(f"peft_bench: model not found: {a.model!r} (pass --model or set ENGRAM_MODEL)")
    log = lambda *m: print(*m, file=sys.stderr, flush=True)

    import torch
    import torch.nn.functional as F
    import transformers
    import peft
    from transformers import AutoModelForCausalLM
    from peft import LoraConfig, get_peft_model

    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(a.seed)

    if a.targets in ("all", "all-linear"):
        target_modules = "all-linear"
    else:
        target_modules = [TARGETS[t] for t in a.targets.split(",")]

    t0 = time.perf_counter()
    mdir, mfile = os.path.split(os.path.abspath(a.model))
    model = AutoModelForCausalLM.from_pretrained(mdir, gguf_file=mfile, dtype=torch.float32)
    model.config.use_cache = False
    load_s = time.perf_counter() - t0
    model = get_peft_model(model, LoraConfig(
        r=a.rank, lora_alpha=a.alpha if a.alpha is not None else 2 * a.rank,
        lora_dropout=0.0, target_modules=target_modules, bias="none", task_type="CAUSAL_LM"))
    model.train()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.0)
    vocab = model.config.vocab_size
    log(f"peft_bench: loaded in {load_s:.1f}s, {trainable} trainable "
        f"(r={a.rank}, targets={target_modules}), rss {vm('VmRSS') / 2**20:.0f} MiB")

    gen = torch.Generator().manual_seed(a.seed)
    batches = [torch.randint(0, vocab, (a.batch, a.seq_len + 1), generator=gen)
               for _ in range(a.warmup + a.steps)]

    def step(x):
        logits = model(input_ids=x[:, :-1]).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach().item()

    peak_after_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    gc.collect()
    reset_ok = reset_peak_rss()
    rss_before_train = vm("VmRSS")
    for i in range(a.warmup):
        loss = step(batches[i])
        log(f"  warm-up step {i + 1}/{a.warmup}: loss {loss:.3f}")
    times, cpu = [], []
    for i in range(a.steps):
        t, c = time.perf_counter(), time.process_time()
        loss = step(batches[a.warmup + i])
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        log(f"  step {i + 1}/{a.steps}: loss {loss:.3f}, {times[-1]:.2f}s wall, {cpu[-1]:.2f}s cpu")
    seconds = sum(times)
    tokens = a.steps * a.batch * a.seq_len
    from importlib.metadata import version
    json.dump({
        "engine": "pytorch+peft",
        "tokens_per_s": round(tokens / seconds, 2),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "train_peak_rss_bytes": vm("VmHWM") if reset_ok else None,
        "peak_rss_after_load_bytes": peak_after_load,
        "rss_before_train_bytes": rss_before_train,
        "step_s": [round(x, 3) for x in times],
        # CPU seconds of all threads; tokens per CPU-second is steadier than tokens/s on a
        # machine shared with other work (it does not count time spent waiting for a core).
        "step_cpu_s": [round(x, 3) for x in cpu],
        "tokens_per_cpu_s": round(tokens / sum(cpu), 2),
        "final_loss": round(loss, 4),
        "load_s": round(load_s, 2),
        "steps": a.steps,
        "warmup": a.warmup,
        "batch": a.batch,
        "seq_len": a.seq_len,
        "rank": a.rank,
        "targets": target_modules,
        "trainable_params": trainable,
        "threads": torch.get_num_threads(),
        "dtype": "float32",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "peft": peft.__version__, "gguf": version("gguf")},
    }, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
