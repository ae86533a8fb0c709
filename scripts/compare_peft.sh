#!/usr/bin/env bash
# LoRA training on the CPU: engram (`engram train-bench`, Q4_1 base mapped and frozen) vs
# PyTorch + PEFT (scripts/peft_bench.py, the same GGUF dequantized to fp32), same shapes, one
# invocation, one engine after the other. Prints a side-by-side table and the ratios
# (issue 3 target: engram >= 3x PEFT's tokens/s at <= 0.5x its peak RSS).
set -euo pipefail

usage() {
    cat <<USAGE
Usage: scripts/compare_peft.sh [options]

Options:
  --model PATH      GGUF model (default: \$ENGRAM_MODEL, else \`engram model-path\`)
  --configs LIST    comma list of target sets, each run with both engines
                    (default: "q,v;all" = rank-8 LoRA on q,v, then on all linear layers)
  --rank R          LoRA rank (default: 8; alpha = 2R for both)
  --seq-len T       tokens per sequence (default: 64)
  --batch B         sequences per step (default: 4)
  --steps S         timed steps (default: 5), after --warmup W untimed ones (default: 1;
                    engram's train-bench always does 1)
  --threads N       threads for both engines (default: 2)
  --only ENGINE     run only 'engram' or only 'peft'
  --cpu-time        also measure engram's tokens per CPU-second (steadier than tokens/s on a
                    shared machine): train-bench runs a second time with --steps 1, and the
                    difference of the two runs' CPU seconds covers STEPS-1 steps (needs
                    --steps >= 2; counts the pool's spin-waiting, so it errs against engram).
                    PEFT reports its own per-step CPU time always.
  --json FILE       also write every figure to FILE
  -h, --help        this text

Environment:
  ENGRAM_BIN        an already built engram binary (default: cargo build --release, then
                    \$CARGO_TARGET_DIR/release/engram)
  PEFT_VENV         the PEFT venv (default: <repo>/.venv-peft, made by scripts/setup_peft_venv.sh)
USAGE
}
die() { echo "compare_peft: $*" >&2; exit 2; }
say() { echo "compare_peft: $*" >&2; }

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MODEL=${ENGRAM_MODEL:-}
CONFIGS="q,v;all"
RANK=8 SEQ=64 BATCH=4 STEPS=5 WARMUP=1 THREADS=2 ONLY="" JSON_OUT="" CPU_TIME=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --model) MODEL=${2:?}; shift 2 ;;
        --configs) CONFIGS=${2:?}; shift 2 ;;
        --rank) RANK=${2:?}; shift 2 ;;
        --seq-len) SEQ=${2:?}; shift 2 ;;
        --batch) BATCH=${2:?}; shift 2 ;;
        --steps) STEPS=${2:?}; shift 2 ;;
        --warmup) WARMUP=${2:?}; shift 2 ;;
        --threads) THREADS=${2:?}; shift 2 ;;
        --only) ONLY=${2:?}; shift 2 ;;
        --cpu-time) CPU_TIME=1; shift ;;
        --json) JSON_OUT=$(realpath -m -- "${2:?}"); shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
for n in "$RANK" "$SEQ" "$BATCH" "$STEPS" "$THREADS"; do
    [[ $n =~ ^[1-9][0-9]*$ ]] || die "expected a positive integer, got '$n'"
done
[[ $WARMUP =~ ^[0-9]+$ ]] || die "--warmup: expected an integer"
case "$ONLY" in "" | engram | peft) ;; *) die "--only takes engram or peft" ;; esac
[[ $CPU_TIME == 0 || $STEPS -ge 2 ]] || die "--cpu-time needs --steps >= 2"

# Runs a command; prints its last stdout line, then the CPU seconds (user + system) it used.
cpu_run() {
    python3 -c 'import resource, subprocess, sys
out = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, text=True, check=True).stdout
u = resource.getrusage(resource.RUSAGE_CHILDREN)
print(out.strip().splitlines()[-1]); print(u.ru_utime + u.ru_stime)' "$@"
}
[[ -n $MODEL ]] && MODEL=$(realpath -m -- "$MODEL")
cd "$REPO"

if [[ $ONLY != engram ]]; then "$REPO/scripts/setup_peft_venv.sh"; fi
PEFT_PY=${PEFT_VENV:-$REPO/.venv-peft}/bin/python

ENGRAM=${ENGRAM_BIN:-}
if [[ -z $ENGRAM ]]; then
    say "building engram (release)..."
    cargo build --quiet --release --bin engram
    ENGRAM=${CARGO_TARGET_DIR:-$REPO/target}/release/engram
fi
[[ -x $ENGRAM ]] || die "engram binary not found: $ENGRAM"
if [[ -z $MODEL ]]; then MODEL=$("$ENGRAM" model-path | tail -n 1); fi
[[ -f $MODEL ]] || die "model not found: '$MODEL'"
say "model: $MODEL"
say "rank $RANK, seq len $SEQ, batch $BATCH, $STEPS timed steps, $THREADS threads"

RESULTS=$(mktemp)
trap 'rm -f "$RESULTS"' EXIT
IFS=';' read -r -a CONFIG_LIST <<<"$CONFIGS"
for targets in "${CONFIG_LIST[@]}"; do
    etargets=$targets
    [[ $targets == all ]] && etargets=q,k,v,o,gate,up,down
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    e=null p=null
    if [[ $ONLY != peft ]]; then
        say "engram train-bench --targets $etargets (load $load)..."
        eargs=(train-bench --json --model "$MODEL" --rank "$RANK" --alpha $((2 * RANK))
            --targets "$etargets" --seq-len "$SEQ" --batch "$BATCH" --threads "$THREADS")
        out=$(cpu_run "$ENGRAM" "${eargs[@]}" --steps "$STEPS")
        e=$(head -n 1 <<<"$out")
        if [[ $CPU_TIME == 1 ]]; then
            cpu_long=$(tail -n 1 <<<"$out")
            say "engram train-bench --steps 1 (for CPU time)..."
            cpu_short=$(cpu_run "$ENGRAM" "${eargs[@]}" --steps 1 | tail -n 1)
            e=$(E=$e python3 -c "import json, os; e = json.loads(os.environ['E']); \
e['tokens_per_cpu_s'] = round(($STEPS - 1) * $BATCH * $SEQ / ($cpu_long - $cpu_short), 2); \
print(json.dumps(e))")
        fi
    fi
    if [[ $ONLY != engram ]]; then
        say "PyTorch + PEFT --targets $targets (load $(cut -d' ' -f1-3 /proc/loadavg))..."
        p=$("$PEFT_PY" "$REPO/scripts/peft_bench.py" --model "$MODEL" --rank "$RANK" \
            --targets "$targets" --seq-len "$SEQ" --batch "$BATCH" --warmup "$WARMUP" \
            --steps "$STEPS" --threads "$THREADS" 2> >(grep -v -E 'Converting|Loading weights' >&2) |
            tail -n 1)
    fi
    echo "{\"targets\": \"$targets\", \"loadavg_before\": \"$load\", \"loadavg_after\": \"$(cut -d' ' -f1-3 /proc/loadavg)\", \"engram\": $e, \"peft\": $p}" >>"$RESULTS"
done

RESULTS=$RESULTS JSON_OUT=$JSON_OUT MODEL=$MODEL python3 - <<'PY'
import datetime, json, os

rows = [json.loads(l) for l in open(os.environ["RESULTS"])]
mib = lambda b: b / 2**20 if b else None
def f(x, fmt):
    return format(x, fmt) if x is not None else "-"
print()
for r in rows:
    e, p = r["engram"] or {}, r["peft"] or {}
    print(f"targets {r['targets']}: load avg {r['loadavg_before']} before, {r['loadavg_after']} after")
    print(f"  {'':<30}{'engram':>12}{'PEFT (fp32)':>14}{'engram/PEFT':>13}")
    def line(label, ev, pv, fmt):
        ratio = ev / pv if ev and pv else None
        print(f"  {label:<30}{f(ev, fmt):>12}{f(pv, fmt):>14}{f(ratio, '.2f'):>13}")
    line("train tokens/s (wall)", e.get("tokens_per_s"), p.get("tokens_per_s"), ".1f")
    line("peak RSS MiB (whole process)", mib(e.get("peak_rss_bytes")), mib(p.get("peak_rss_bytes")), ".0f")
    line("peak RSS MiB (training only)", None, mib(p.get("train_peak_rss_bytes")), ".0f")
    line("planner estimate MiB", mib(e.get("plan_bytes")), None, ".0f")
    line("trainable parameters", e.get("trainable_params"), p.get("trainable_params"), ".0f")
    line("train tokens per CPU-second", e.get("tokens_per_cpu_s"), p.get("tokens_per_cpu_s"), ".1f")
    if e and p:
        ok_t = e["tokens_per_s"] >= 3 * p["tokens_per_s"]
        ok_m = e["peak_rss_bytes"] <= 0.5 * p["peak_rss_bytes"]
        ok_m2 = (p.get("train_peak_rss_bytes") is None
                 or e["peak_rss_bytes"] <= 0.5 * p["train_peak_rss_bytes"])
        print(f"  target >= 3x tokens/s: {'met' if ok_t else 'NOT met'}; "
              f"<= 0.5x peak RSS: {'met' if ok_m else 'NOT met'} (whole process), "
              f"{'met' if ok_m2 else 'NOT met'} (vs PEFT's training-only peak)")
    print()
if os.environ["JSON_OUT"]:
    with open(os.environ["JSON_OUT"], "w") as fh:
        json.dump({"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                   "model": os.environ["MODEL"], "runs": rows}, fh, indent=1)
    print(f"figures: {os.environ['JSON_OUT']}")
PY
