#!/usr/bin/env bash
# The editing quality grid of docs/BENCHMARKS.md: every method at 1, 10, 100 and 1,000
# sequential edits, 20 further known facts as locality probes, fluency before and after. One
# JSON report per run in OUT_DIR, then a Markdown table on stdout.
#
# Up to ALL_FROM edits (default 200: data/edit/facts.jsonl holds ≈ 200 facts the model
# knows) a row edits the first N *known* facts of data/edit/facts.jsonl, in its fixed order
# (`--known-only`). Above it there are not enough known facts: the row edits the first N
# facts of data/edit/facts_more.jsonl (facts.jsonl, then further relations), known to the
# model or not, and the table's "facts" column says so.
#
# Usage: scripts/edit_grid.sh [OUT_DIR] [SIZES] [METHODS]
#   defaults: data/edit/bench "1 10 100 1000" "gated grace rome alphaedit memit ultraedit"
#   (a method the binary does not know is skipped with a message)
# EDIT_ARGS: further `engram edit` arguments for every run (e.g. `--details`: per-probe
# answers and the paraphrase table by template in each JSON report).
# Each row keeps an edit log (OUT_DIR/METHOD-N.log) while it runs and deletes it once its report
# is written: a row stopped part-way (a session's end, a kill) resumes from its log on the next
# run with the same OUT_DIR, keeping the edits and per-edit times already made (the report's
# "resumed" says how many). Delete the log to start that row over (after changing the binary).
# Needs a release build (`cargo build --release --bins`); ENGRAM_MODEL or the model cache.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${1:-data/edit/bench}
sizes=${2:-1 10 100 1000}
methods=${3:-gated grace rome alphaedit memit ultraedit}
all_from=${ALL_FROM:-200}
bin=${ENGRAM_BIN:-target/release/engram}
bash scripts/edit_facts.sh
bash scripts/edit_corpus.sh
mkdir -p "$out"
for n in $sizes; do
    if ((n > all_from)); then
        facts=(--facts data/edit/facts_more.jsonl)
    else
        facts=(--facts data/edit/facts.jsonl --known-only)
    fi
    for m in $methods; do
        if ! "$bin" edit --help 2>&1 | grep -q -- "- $m:"; then
            echo "$m: not a method of $bin, skipped" >&2
            continue
        fi
        echo "$m × $n ..." >&2
        "$bin" edit "${facts[@]}" --method "$m" --sequential --limit "$n" --known-probes 20 \
            --generate 20 --json --log "$out/$m-$n.log" ${EDIT_ARGS:-} >"$out/$m-$n.json.tmp"
        mv "$out/$m-$n.json.tmp" "$out/$m-$n.json"
        rm -f "$out/$m-$n.log" "$out/.$m-$n.log.engram-lock"
    done
done
python3 - "$out" "$all_from" $sizes -- $methods <<'PY'
import json, sys
out, all_from = sys.argv[1], int(sys.argv[2])
sep = sys.argv.index("--")
sizes, methods = sys.argv[3:sep], sys.argv[sep + 1:]
def f(r):
    if r is None:
        return "–"
    if r.get("rate") is None:
        return f"null (0: {r.get('why', '')})"
    return f"{r['rate']:.2f} ({r['hits']}/{r['n']})"
print("| method | edits | facts | efficacy | generalization (known) | locality: top-1 | P(true)>P(new) "
      "| same subject | 20 known facts | generation: eff / para / loc | s / edit |")
print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for m in methods:
    for n in sizes:
        try:
            d = json.load(open(f"{out}/{m}-{n}.json"))
        except FileNotFoundError:
            continue
        g = d.get("generation") or {}
        gen = " / ".join(f(g.get(k)) for k in ("efficacy", "generalization", "locality")) if g else "–"
        facts = "known" if int(n) <= all_from else "all (facts_more)"
        print(f"| {m} | {d['n_edits']} | {facts} | {f(d['efficacy'])} | {f(d['generalization'])} "
              f"({f(d['generalization_known'])}) | {f(d['locality'])} | {f(d['locality_ptrue'])} "
              f"| {f(d['locality_subject'])} | {f(d['locality_known'])} | {gen} "
              f"| {d['seconds_per_edit']:.2f} |")
PY
