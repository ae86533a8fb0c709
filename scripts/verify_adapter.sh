#!/usr/bin/env bash
# Verify that engram's LoRA adapter files load in PEFT and in llama.cpp and agree with engram's
# logits (scripts/verify_adapter.py does the work; this sets up and finds the three engines).
set -euo pipefail

usage() {
    cat <<USAGE
Usage: scripts/verify_adapter.sh [--adapter-dir DIR | --train DIR] [-- verify_adapter.py options]

  --adapter-dir DIR  an existing engram adapter output: DIR/peft/ and DIR/adapter.gguf
  --train DIR        first train one with \`cargo run --release --example adapt -- --out DIR\`
                     (default DIR when neither is given: target/peft-verify/adapter, trained
                     when DIR/adapter.gguf does not exist)
  --model PATH       base GGUF (default: \$ENGRAM_MODEL, else \`engram model-path\`)
  -h, --help         this text; \`--\` passes the rest to verify_adapter.py (see its --help)

Environment:
  ENGRAM_LLAMACPP_VENV  llama-cpp-python venv (default: <repo>/.venv-llamacpp, or the main
                        worktree's when this is a git worktree; built by
                        \`scripts/compare_llamacpp.sh --setup\` (~15 min) when neither has one)
  PEFT_VENV             the PEFT venv (default: <repo>/.venv-peft; scripts/setup_peft_venv.sh)
  CARGO_TARGET_DIR      where cargo builds engram (default: <repo>/target)
  ENGRAM_BIN            an already built engram binary (skips the cargo build)
USAGE
}

die() { echo "verify_adapter: $*" >&2; exit 2; }
say() { echo "verify_adapter: $*" >&2; }

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ADIR=""
TRAIN=0
MODEL=${ENGRAM_MODEL:-}
PASS=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --adapter-dir) ADIR=${2:?--adapter-dir needs DIR}; shift 2 ;;
        --train) ADIR=${2:?--train needs DIR}; TRAIN=1; shift 2 ;;
        --model) MODEL=${2:?--model needs PATH}; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        --) shift; PASS=("$@"); break ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
[[ -n $MODEL ]] && MODEL=$(realpath -m -- "$MODEL")
if [[ -z $ADIR ]]; then
    ADIR=$REPO/target/peft-verify/adapter
    [[ -f $ADIR/adapter.gguf ]] || TRAIN=1
fi
ADIR=$(realpath -m -- "$ADIR")
cd "$REPO"
TARGET=${CARGO_TARGET_DIR:-$REPO/target}

# 1. The two Python venvs.
"$REPO/scripts/setup_peft_venv.sh"
PEFT_PY=${PEFT_VENV:-$REPO/.venv-peft}/bin/python
# The llama.cpp venv: $ENGRAM_LLAMACPP_VENV, else this checkout's .venv-llamacpp, else (in a
# git worktree) the main worktree's, so that a worktree reuses the ~15-minute build.
LLAMA_VENV=${ENGRAM_LLAMACPP_VENV:-$REPO/.venv-llamacpp}
if [[ -z ${ENGRAM_LLAMACPP_VENV:-} ]] && ! "$LLAMA_VENV/bin/python" -c "import llama_cpp" 2>/dev/null; then
    MAIN_TREE=$(dirname "$(git -C "$REPO" rev-parse --path-format=absolute --git-common-dir 2>/dev/null || echo .)")
    if "$MAIN_TREE/.venv-llamacpp/bin/python" -c "import llama_cpp" 2>/dev/null; then
        LLAMA_VENV=$MAIN_TREE/.venv-llamacpp
    fi
fi
if ! "$LLAMA_VENV/bin/python" -c "import llama_cpp, numpy" 2>/dev/null; then
    if [[ -z ${ENGRAM_LLAMACPP_VENV:-} ]]; then
        say "no llama-cpp-python in $LLAMA_VENV: building it (scripts/compare_llamacpp.sh --setup, ~15 min)"
        "$REPO/scripts/compare_llamacpp.sh" --setup
    else
        die "no llama-cpp-python in \$ENGRAM_LLAMACPP_VENV=$LLAMA_VENV; build one with VENV=$LLAMA_VENV scripts/compare_llamacpp.sh --setup"
    fi
fi
say "llama.cpp venv: $LLAMA_VENV"

# 2. engram (release).
if [[ -n ${ENGRAM_BIN:-} ]]; then
    ENGRAM=$ENGRAM_BIN
else
    say "building engram (release) in $TARGET..."
    cargo build --quiet --release --bin engram
    ENGRAM=$TARGET/release/engram
fi
[[ -x $ENGRAM ]] || die "engram binary not found: $ENGRAM"
if [[ -z $MODEL ]]; then MODEL=$("$ENGRAM" model-path | tail -n 1); fi
[[ -f $MODEL ]] || die "model not found: '$MODEL'"
say "model: $MODEL"

# 3. The adapter.
if [[ $TRAIN == 1 ]]; then
    say "training an adapter: cargo run --release --example adapt -- --out $ADIR"
    ENGRAM_MODEL=$MODEL cargo run --quiet --release --example adapt -- --out "$ADIR"
fi
[[ -f $ADIR/adapter.gguf && -f $ADIR/peft/adapter_model.safetensors ]] ||
    die "$ADIR has no peft/adapter_model.safetensors and adapter.gguf"

say "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
exec "$PEFT_PY" "$REPO/scripts/verify_adapter.py" --adapter-dir "$ADIR" --model "$MODEL" \
    --engram "$ENGRAM" --llamacpp-python "$LLAMA_VENV/bin/python" ${PASS[@]+"${PASS[@]}"}
