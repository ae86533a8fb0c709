#!/usr/bin/env bash
# The editing quality grid of docs/BENCHMARKS.md: every method at 1, 10 and 100 sequential
# edits of known facts (data/edit/facts.jsonl, in its fixed order), 20 further known facts as
# locality probes, fluency before and after. One JSON report per run in OUT_DIR, then a
# Markdown table on stdout.
#
# Usage: scripts/edit_grid.sh [OUT_DIR] [SIZES] [METHODS]
#   defaults: data/edit/bench "1 10 100" "gated grace rome alphaedit memit"
# Needs a release build (`cargo build --release --bins`); ENGRAM_MODEL or the model cache.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${1:-data/edit/bench}
sizes=${2:-1 10 100}
methods=${3:-gated grace rome alphaedit memit}
bin=${ENGRAM_BIN:-target/release/engram}
bash scripts/edit_facts.sh
bash scripts/edit_corpus.sh
mkdir -p "$out"
for n in $sizes; do
    for m in $methods; do
        echo "$m × $n ..." >&2
        "$bin" edit --facts data/edit/facts.jsonl --method "$m" --sequential --known-only \
            --limit "$n" --known-probes 20 --generate 20 --json >"$out/$m-$n.json.tmp"
        mv "$out/$m-$n.json.tmp" "$out/$m-$n.json"
    done
done
python3 - "$out" $sizes -- $methods <<'PY'
import json, sys
out = sys.argv[1]
sep = sys.argv.index("--")
sizes, methods = sys.argv[2:sep], sys.argv[sep + 1:]
def f(r):
    if r is None:
        return "–"
    if r.get("rate") is None:
        return f"null (0: {r.get('why', '')})"
    return f"{r['rate']:.2f} ({r['hits']}/{r['n']})"
print("| method | edits | efficacy | generalization (known) | locality: top-1 | P(true)>P(new) "
      "| same subject | 20 known facts | generation: eff / para / loc | s / edit |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for m in methods:
    for n in sizes:
        try:
            d = json.load(open(f"{out}/{m}-{n}.json"))
        except FileNotFoundError:
            continue
        g = d.get("generation") or {}
        gen = " / ".join(f(g.get(k)) for k in ("efficacy", "generalization", "locality")) if g else "–"
        print(f"| {m} | {d['n_edits']} | {f(d['efficacy'])} | {f(d['generalization'])} "
              f"({f(d['generalization_known'])}) | {f(d['locality'])} | {f(d['locality_ptrue'])} "
              f"| {f(d['locality_subject'])} | {f(d['locality_known'])} | {gen} "
              f"| {d['seconds_per_edit']:.2f} |")
PY
