#!/usr/bin/env bash
# Generates the model-editing fact set from the npm package countries-list@3.4.1 (MIT).
#
# Usage: scripts/edit_facts.sh [OUT_DIR]   (default: data/edit)
# Writes OUT_DIR/facts.jsonl (EasyEdit-shaped lines, see scripts/edit_facts.mjs), OUT_DIR/
# background.jsonl and OUT_DIR/facts_more.jsonl (facts.jsonl plus further relations). The data is
# generated, never committed (/data/ is in .gitignore). Needs node + npm; on Debian without
# them (CI), installs the distribution's npm with apt-get.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${1:-data/edit}
# A file from before the `phrasings` field (or without facts_more.jsonl) is regenerated (same
# facts, same order).
if [[ -s $out/facts.jsonl && -s $out/facts_more.jsonl ]] &&
    head -n 1 "$out/facts.jsonl" | grep -q '"phrasings"'; then
    echo "$out/facts.jsonl exists ($(wc -l <"$out/facts.jsonl") facts)" >&2
    exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends npm
fi
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent countries-list@3.4.1 >/dev/null && tar xzf countries-list-3.4.1.tgz)
node scripts/edit_facts.mjs "$work/package" >"$work/all.jsonl"
# The last BACKGROUND requests are never edited or probed: their true statements go into the
# key-statistics corpus (scripts/edit_corpus.sh), the facts of this kind the layer already
# stores and an edit must leave alone (ROME and MEMIT estimate them from Wikipedia).
background=${ENGRAM_EDIT_BACKGROUND:-300}
total=$(wc -l <"$work/all.jsonl")
head -n $((total - background)) "$work/all.jsonl" >"$out/facts.jsonl.tmp"
tail -n "$background" "$work/all.jsonl" >"$out/background.jsonl.tmp"
mv "$out/background.jsonl.tmp" "$out/background.jsonl"
mv "$out/facts.jsonl.tmp" "$out/facts.jsonl"
# facts.jsonl's requests, then those of further relations (scripts/edit_facts.mjs --more): the
# source of the 1,000-edit grid row (scripts/edit_grid.sh).
node scripts/edit_facts.mjs "$work/package" --more >"$work/more.jsonl"
cat "$out/facts.jsonl" "$work/more.jsonl" >"$out/facts_more.jsonl.tmp"
mv "$out/facts_more.jsonl.tmp" "$out/facts_more.jsonl"
echo "wrote $out/facts.jsonl ($(wc -l <"$out/facts.jsonl") facts) and $out/background.jsonl ($background)" >&2
