#!/usr/bin/env bash
# Compare engram with llama.cpp on the same GGUF file and the same thread count.
#
# llama.cpp runs through llama-cpp-python, built from source into .venv-llamacpp/ at the
# repository root (gitignored; reused when present). The first build compiles llama.cpp:
# about 15 minutes on 2 cores.
set -euo pipefail

LLAMA_CPP_PYTHON_VERSION=0.3.36

usage() {
    cat <<EOF
Usage: scripts/compare_llamacpp.sh [options]

Measures prefill and decode tokens/s of llama.cpp (llama-cpp-python ${LLAMA_CPP_PYTHON_VERSION})
and of \`engram bench\`, the two engines alternated per thread count in one run, and prints
both side by side with the ratio engram/llama.cpp (means over the repeats, ± sd).

Options:
  --model PATH         GGUF model (default: \$ENGRAM_MODEL, else \`engram model-path\`)
  --threads N[,M..]    thread counts, each run by both engines (default: 1,2)
  --prompt-tokens P    prefill length in tokens (default: 128)
  --gen-tokens G       tokens decoded one at a time, greedy (default: 64)
  --repeats R          timed runs per engine after one warm-up; mean ± sd reported (default: 5)
  --only ENGINE        run only 'llamacpp' or only 'engram'
  --json               print one JSON object on stdout (the table goes to stderr)
  --setup              only build/check the llama.cpp venv, then exit
  -h, --help           this text

Environment:
  ENGRAM_MODEL         model path, used when --model is not given
  VENV                 venv directory (default: <repo>/.venv-llamacpp)
  CMAKE_ARGS           overrides the lean CPU-only llama.cpp build flags below
  ENGRAM_BENCH_ARGS    extra arguments to \`engram bench\` (e.g. --graph-prefill)
EOF
}

die() { echo "compare_llamacpp: $*" >&2; exit 2; }

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$REPO/.venv-llamacpp}
MODEL=""
THREADS=1,2
PROMPT_TOKENS=128
GEN_TOKENS=64
REPEATS=5
ONLY=""
JSON=0
SETUP_ONLY=0

while [[ $# -gt 0 ]]; do
    case "$1" in
        --model) MODEL=${2:?--model needs a path}; shift 2 ;;
        --threads) THREADS=${2:?--threads needs N}; shift 2 ;;
        --prompt-tokens) PROMPT_TOKENS=${2:?--prompt-tokens needs P}; shift 2 ;;
        --gen-tokens) GEN_TOKENS=${2:?--gen-tokens needs G}; shift 2 ;;
        --repeats) REPEATS=${2:?--repeats needs R}; shift 2 ;;
        --only) ONLY=${2:?--only needs llamacpp or engram}; shift 2 ;;
        --json) JSON=1; shift ;;
        --setup) SETUP_ONLY=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
[[ $THREADS =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || die "--threads takes N or N,M,..., got '$THREADS'"
for n in "$PROMPT_TOKENS" "$GEN_TOKENS" "$REPEATS"; do
    [[ $n =~ ^[1-9][0-9]*$ ]] || die "expected a positive integer, got '$n'"
done
case "$ONLY" in "" | llamacpp | engram) ;; *) die "--only takes llamacpp or engram" ;; esac

# With --json, stdout carries only the JSON line; everything for humans goes to stderr.
if [[ $JSON == 1 ]]; then exec 3>&2; else exec 3>&1; fi
say() { echo "$@" >&3; }

# --- llama.cpp venv ------------------------------------------------------------------------
venv_ready() {
    [[ -x $VENV/bin/python ]] &&
        "$VENV/bin/python" -c "import llama_cpp, numpy, sys; \
sys.exit(llama_cpp.__version__ != '$LLAMA_CPP_PYTHON_VERSION')" 2>/dev/null
}

setup_venv() {
    if venv_ready; then
        say "llama-cpp-python $LLAMA_CPP_PYTHON_VERSION: reusing $VENV"
        return
    fi
    say "building llama-cpp-python $LLAMA_CPP_PYTHON_VERSION into $VENV (~15 min on 2 cores)..."
    [[ -x $VENV/bin/python ]] || python3 -m venv "$VENV"
    # CPU only, no BLAS, no examples/tests. GGML_NATIVE=ON tunes llama.cpp for this CPU,
    # which is what we want for a benchmark (this build is never shipped).
    CMAKE_ARGS=${CMAKE_ARGS:-"-DGGML_NATIVE=ON -DGGML_CUDA=OFF -DGGML_METAL=OFF \
-DGGML_VULKAN=OFF -DGGML_HIP=OFF -DGGML_SYCL=OFF -DGGML_OPENCL=OFF -DGGML_BLAS=OFF \
-DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"} \
    CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} \
        "$VENV/bin/pip" install --no-cache-dir "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" >&3
    venv_ready || die "llama-cpp-python installed but 'import llama_cpp' fails in $VENV"
}

if [[ $ONLY != engram ]]; then setup_venv; fi
if [[ $SETUP_ONLY == 1 ]]; then exit 0; fi

# --- model ---------------------------------------------------------------------------------
if [[ -z $MODEL ]]; then MODEL=${ENGRAM_MODEL:-}; fi
if [[ -n $MODEL ]]; then MODEL=$(realpath -m -- "$MODEL"); fi # relative to the caller's cwd
cd "$REPO"
if [[ -z $MODEL ]]; then
    say "resolving the model with \`engram model-path\`..."
    MODEL=$(cargo run --quiet --release --bin engram -- model-path | tail -n 1)
fi
[[ -f $MODEL ]] || die "model not found: '$MODEL'"
say "model:   $MODEL"
say "threads: $THREADS, prompt: $PROMPT_TOKENS tokens, generate: $GEN_TOKENS tokens, repeats: $REPEATS"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
say "load:    $LOAD_BEFORE (1/5/15 min, before the runs)"

# --- measure: per thread count, llama.cpp then engram --------------------------------------
if [[ $ONLY != llamacpp ]]; then
    say "building engram (release)..."
    cargo build --quiet --release --bin engram >&3
fi
ROWS=()
IFS=, read -r -a THREAD_LIST <<<"$THREADS"
for t in "${THREAD_LIST[@]}"; do
    LLAMA_JSON=null
    ENGRAM_JSON=null
    LOAD_T=$(cut -d' ' -f1 /proc/loadavg)
    if [[ $ONLY != engram ]]; then
        say "running llama.cpp, $t threads..."
        LLAMA_JSON=$("$VENV/bin/python" "$REPO/scripts/llamacpp_bench.py" --model "$MODEL" \
            --threads "$t" --prompt-tokens "$PROMPT_TOKENS" --gen-tokens "$GEN_TOKENS" \
            --repeats "$REPEATS" | tail -n 1)
    fi
    if [[ $ONLY != llamacpp ]]; then
        say "running engram bench, $t threads..."
        ENGRAM_JSON=$(cargo run --quiet --release --bin engram -- bench --model "$MODEL" \
            --threads "$t" --prompt-tokens "$PROMPT_TOKENS" --gen-tokens "$GEN_TOKENS" \
            --repeats "$REPEATS" --json ${ENGRAM_BENCH_ARGS:-} | tail -n 1)
    fi
    ROWS+=("{\"threads\": $t, \"loadavg_1min_before\": $LOAD_T, \"llamacpp\": $LLAMA_JSON, \"engram\": $ENGRAM_JSON}")
done
ROWS_JSON="[$(IFS=,; echo "${ROWS[*]}")]"

# --- report --------------------------------------------------------------------------------
# python3 (system) only formats; the figures come from the JSON objects above.
ROWS_JSON=$ROWS_JSON MODEL=$MODEL JSON=$JSON LOAD_BEFORE=$LOAD_BEFORE \
    python3 - <<'EOF'
import datetime, json, os, sys

rows = json.loads(os.environ["ROWS_JSON"])
human = sys.stderr if os.environ["JSON"] == "1" else sys.stdout


def get(d, key):
    # engram prints an array (one object per variant), llama.cpp one object.
    if isinstance(d, list):
        d = d[0] if d else None
    return (d or {}).get(key)


def cell(v, sd):
    return f"{v:>9.1f} ± {sd or 0:>4.1f}" if v else f"{'-':>16}"


print(f"\n{'threads':>7} {'load':>5} {'':<8}{'engram':>16}{'llama.cpp':>16}{'engram/llama':>14}",
      file=human)
out = []
for row in rows:
    e, l = row["engram"], row["llamacpp"]
    r = {}
    for key, label in (("prefill_tok_s", "prefill"), ("decode_tok_s", "decode")):
        sd = key.replace("_tok_s", "_sd")
        ev, lv = get(e, key), get(l, key)
        r[key] = round(ev / lv, 3) if ev and lv else None
        rr = f"{r[key]:>14.2f}" if r[key] is not None else f"{'-':>14}"
        print(f"{row['threads']:>7} {row['loadavg_1min_before']:>5.2f} {label:<8}"
              f"{cell(ev, get(e, sd))}{cell(lv, get(l, sd))}{rr}", file=human)
    out.append({**row, "ratio_engram_over_llamacpp": r})

if os.environ["JSON"] == "1":
    print(json.dumps({
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": os.environ["MODEL"],
        # 1/5/15-minute load averages; these figures are unreliable when it is above ~0.5.
        "loadavg_before": [float(x) for x in os.environ["LOAD_BEFORE"].split()],
        "loadavg_after": [float(x) for x in open("/proc/loadavg").read().split()[:3]],
        "runs": out,
    }))
EOF
