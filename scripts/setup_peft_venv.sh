#!/usr/bin/env bash
# Create (or reuse) the gitignored venv .venv-peft/ with PyTorch + PEFT + transformers + gguf,
# used by scripts/verify_adapter.py and scripts/peft_bench.py.
#
# torch comes from PyTorch's CPU wheel index when it is reachable (a ~200 MB CPU-only wheel);
# otherwise from PyPI, whose Linux wheel pulls the CUDA runtime packages (a few GB on disk,
# never used here: everything runs on the CPU). Everything else comes from PyPI.
# Idempotent: a venv whose pinned versions already import is reused as it is.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${PEFT_VENV:-$REPO/.venv-peft}
PYTHON=${PYTHON:-python3}

# Pinned versions (the ones the figures in docs/BENCHMARKS.md were measured with).
TORCH_VERSION=2.15.0
TRANSFORMERS_VERSION=5.23.0
PEFT_VERSION=0.21.2
GGUF_VERSION=0.19.0
SAFETENSORS_VERSION=0.8.0
ACCELERATE_VERSION=1.15.0
TORCH_CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}

say() { echo "setup_peft_venv: $*" >&2; }

ready() {
    [[ -x $VENV/bin/python ]] && "$VENV/bin/python" - <<PY 2>/dev/null
import sys
import torch, transformers, peft, gguf, safetensors, numpy, accelerate
want = {"torch": "$TORCH_VERSION", "transformers": "$TRANSFORMERS_VERSION", "peft": "$PEFT_VERSION",
        "safetensors": "$SAFETENSORS_VERSION", "accelerate": "$ACCELERATE_VERSION"}
got = {"torch": torch.__version__.split("+")[0], "transformers": transformers.__version__,
       "peft": peft.__version__, "safetensors": safetensors.__version__,
       "accelerate": accelerate.__version__}
from importlib.metadata import version
if version("gguf") != "$GGUF_VERSION":
    sys.exit(1)
sys.exit(0 if got == want else 1)
PY
}

if ready; then
    say "reusing $VENV"
    "$VENV/bin/python" -c "import torch, transformers, peft; from importlib.metadata import version; \
print(f'torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, gguf {version(\"gguf\")}')" >&2
    exit 0
fi

if [[ ! -x $VENV/bin/python ]]; then
    say "creating $VENV with $($PYTHON --version 2>&1)"
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --no-cache-dir)

# 1. torch: CPU-only index if reachable, else PyPI.
if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
    if "$VENV/bin/python" - "$TORCH_CPU_INDEX" <<'PY' 2>/dev/null; then
import sys, urllib.request
urllib.request.urlopen(sys.argv[1] + "/torch/", timeout=10).read(1)
PY
        say "installing torch==$TORCH_VERSION (CPU-only) from $TORCH_CPU_INDEX"
        "${PIP[@]}" --index-url "$TORCH_CPU_INDEX" --extra-index-url https://pypi.org/simple \
            "torch==$TORCH_VERSION"
    else
        say "$TORCH_CPU_INDEX is unreachable: installing torch==$TORCH_VERSION from PyPI" \
            "(its Linux wheel brings the CUDA runtime packages, a few GB; they stay unused)"
        "${PIP[@]}" "torch==$TORCH_VERSION"
    fi
fi

# 2. The rest, from PyPI.
say "installing transformers==$TRANSFORMERS_VERSION peft==$PEFT_VERSION gguf==$GGUF_VERSION" \
    "safetensors==$SAFETENSORS_VERSION accelerate==$ACCELERATE_VERSION numpy"
"${PIP[@]}" "transformers==$TRANSFORMERS_VERSION" "peft==$PEFT_VERSION" "gguf==$GGUF_VERSION" \
    "safetensors==$SAFETENSORS_VERSION" "accelerate==$ACCELERATE_VERSION" numpy

ready || { say "installed, but the pinned versions do not import from $VENV"; exit 1; }
"$VENV/bin/python" -m pip freeze >&2
say "ready: $VENV"
