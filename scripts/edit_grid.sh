#!/usr/bin/env bash
# The editing quality grid of docs/BENCHMARKS.md: every method at 1, 10 and 100 sequential
# edits of known facts (data/edit/facts.jsonl, in its fixed order), 20 further known facts as
# locality probes, fluency before and after. One JSON report per run in OUT_DIR, then a
# Markdown table on stdout.
#
# Usage: scripts/edit_grid.sh [OUT_DIR] [SIZES] [METHODS]
#   defaults: data/edit/bench "1 10 100" "grace rome alphaedit memit"
# Needs a release build (`cargo build --release --bins`); ENGRAM_MODEL or the model cache.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${1:-data/edit/bench}
sizes=${2:-1 10 100}
methods=${3:-grace rome alphaedit memit}
bin=${ENGRAM_BIN:-target/release/engram}
bash scripts/edit_facts.sh
bash scripts/edit_corpus.sh
mkdir -p "$out"
for n in $sizes; do
    for m in $methods; do
        echo "$m × $n ..." >&2
        "$bin" edit --facts data/edit/facts.jsonl --method "$m" --sequential --known-only \
            --limit "$n" --known-probes 20 --fluency --json >"$out/$m-$n.json.tmp"
        mv "$out/$m-$n.json.tmp" "$out/$m-$n.json"
    done
done
python3 - "$out" $sizes -- $methods <<'PY'
import json, sys
out = sys.argv[1]
sep = sys.argv.index("--")
sizes, methods = sys.argv[2:sep], sys.argv[sep + 1:]
print("| method | edits | efficacy | margin | generalization | locality | locality (20 known) "
      "| portability | fluency before → after | s / edit |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
f = lambda v: "–" if v is None else f"{v:.2f}"
for m in methods:
    for n in sizes:
        try:
            d = json.load(open(f"{out}/{m}-{n}.json"))
        except FileNotFoundError:
            continue
        print(f"| {m} | {d['n_edits']} | {f(d['efficacy'])} | {d['efficacy_margin']:+.2f} "
              f"| {f(d['generalization'])} | {f(d['locality'])} | {f(d['locality_known'])} "
              f"| {f(d['portability'])} | {f(d['fluency_before'])} → {f(d['fluency_after'])} "
              f"| {d['seconds_per_edit']:.2f} |")
PY
