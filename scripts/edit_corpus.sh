#!/usr/bin/env bash
# Writes the text corpus the model editors estimate their key statistics from: the true
# statements of the background facts (data/edit/background.jsonl from scripts/edit_facts.sh:
# requests never edited or probed, e.g. "The capital of Chile is Santiago."), then Debian's
# fortunes-min (short quotations, jokes and literature; free to redistribute) with the `%`
# separators removed. The statements come first so a token budget keeps them.
#
# Usage: scripts/edit_corpus.sh [OUT_DIR]   (default: data/edit) -> OUT_DIR/corpus.txt
# Installs fortunes-min with apt-get when it is missing (needs root, as in CI). Without it the
# editors fall back to text the model samples itself (slower). Generated, never committed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${1:-data/edit}
dir=/usr/share/games/fortunes
if [[ -s $out/corpus.txt ]]; then
    echo "$out/corpus.txt exists ($(wc -c <"$out/corpus.txt") bytes)" >&2
    exit 0
fi
if [[ ! -f $dir/fortunes ]]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends fortunes-min >/dev/null
fi
mkdir -p "$out"
[[ -s $out/background.jsonl ]] || bash scripts/edit_facts.sh "$out" ||
    echo "no background facts (scripts/edit_facts.sh failed): fortunes only" >&2
{
    if [[ -s $out/background.jsonl ]]; then python3 -c '
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    for p in [r["prompt"]] + r["rephrase_prompts"]:
        print(p, r["ground_truth"] + ".")
' "$out/background.jsonl"; fi
    echo
    for f in "$dir"/*; do
        if [[ -f $f && $f != *.dat && $f != *.u8 ]]; then grep -v '^%$' "$f" || true; fi
    done
} >"$out/corpus.txt.tmp"
mv "$out/corpus.txt.tmp" "$out/corpus.txt"
echo "wrote $out/corpus.txt ($(wc -c <"$out/corpus.txt") bytes)" >&2
