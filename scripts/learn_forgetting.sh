#!/usr/bin/env bash
# Forgetting of the learning runtime on a language stream, measured through the CLI a device
# supervisor would use: `engram learn` on three Debian fortunes categories in turn
# (science -> computers -> food), `engram eval` on every category's held-out fortunes after
# each, for several strategies and seeds. Every strategy spends the same compute: `--steps`
# steps of `--batch` sequences per category (ER and DER++ replay half of each batch).
#
# Forgetting (nats/token): over the categories before the last, the final held-out loss minus
# the lowest it reached after that category was learned; the mean over categories, then the
# interquartile mean over seeds. Prints a table and the ratio to naive's forgetting.
#
# A seed sets the adapter's initialization, the replay memory's draws and the order of each
# category's training fortunes (a seeded permutation; `--order fixed` keeps the file order for
# every seed). `--buffer` is the replay memory in sequences (default: the runtime's own, 256,
# which holds every earlier category's 96 training fortunes; 64 keeps a reservoir sample).
#
# Usage: scripts/learn_forgetting.sh [--seeds N] [--strategies naive,er,lwf,der++,mkd]
#        [--steps S] [--order seeded|fixed] [--buffer M] [--engram PATH]
#        (data: scripts/fetch_cl_data.sh fortunes)
set -euo pipefail

SEEDS=3
STRATEGIES=naive,er,lwf,der++,mkd
STEPS=24
ORDER=seeded
BUFFER=256
ENGRAM=${ENGRAM:-target/release/engram}
while (($#)); do
    case $1 in
        --seeds) SEEDS=$2; shift 2 ;;
        --strategies) STRATEGIES=$2; shift 2 ;;
        --steps) STEPS=$2; shift 2 ;;
        --order) ORDER=$2; shift 2 ;;
        --buffer) BUFFER=$2; shift 2 ;;
        --engram) ENGRAM=$2; shift 2 ;;
        -h|--help) sed -n 2,22p "$0"; exit 0 ;;
        *) echo "learn_forgetting: unknown argument $1" >&2; exit 2 ;;
    esac
done
DATA=${ENGRAM_DATA:-${XDG_CACHE_HOME:-$HOME/.cache}/engram/data}
[[ -d $DATA/fortunes ]] || { echo "no $DATA/fortunes: run scripts/fetch_cl_data.sh fortunes" >&2; exit 2; }
[[ -x $ENGRAM ]] || { echo "no $ENGRAM: cargo build --release --bin engram" >&2; exit 2; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# The stream: 96 training and 24 held-out fortunes (40-300 bytes) per category, every other
# fortune from the start held out until 24 are; the same prompt for all.
python3 - "$DATA/fortunes" "$WORK" <<'PY'
import json, sys
src, out = sys.argv[1], sys.argv[2]
for cat in ["science", "computers", "food"]:
    text = open(f"{src}/{cat}", encoding="utf-8", errors="replace").read()
    items = [f.strip() for f in text.split("\n%\n") if 40 <= len(f.strip()) <= 300]
    train, test = [], []
    for i, f in enumerate(items):
        if i % 2 == 1 and len(test) < 24:
            test.append(f)
        elif len(train) < 96:
            train.append(f)
    for name, rows in [("train", train), ("test", test)]:
        with open(f"{out}/{cat}.{name}.jsonl", "w") as fh:
            for f in rows:
                fh.write(json.dumps({"prompt": "A fortune cookie says:\n", "completion": f, "task": cat}) + "\n")
PY

CATS=(science computers food)
COMMON=(--threads 2 -q)
[[ -n ${ENGRAM_MODEL:-} ]] && COMMON+=(--model "$ENGRAM_MODEL")
echo "date: $(date -u +%FT%TZ)  load: $(cut -d' ' -f1-3 /proc/loadavg)  engram: $ENGRAM  order: $ORDER  buffer: $BUFFER" >&2
for strategy in ${STRATEGIES//,/ }; do
    for ((seed = 0; seed < SEEDS; seed++)); do
        state="$WORK/state-$strategy-$seed"
        start=$SECONDS
        for cat in "${CATS[@]}"; do
            python3 - "$WORK/$cat.train.jsonl" "$WORK/$cat.train.$seed.jsonl" "$seed" "$ORDER" <<'PY'
import random, sys
rows = open(sys.argv[1]).read().splitlines()
if sys.argv[4] == "seeded":
    random.Random(int(sys.argv[3])).shuffle(rows)
open(sys.argv[2], "w").write("\n".join(rows) + "\n")
PY
        done
        row=()
        for cat in "${CATS[@]}"; do
            "$ENGRAM" learn --state "$state" --data "$WORK/$cat.train.$seed.jsonl" --steps "$STEPS" \
                --strategy "$strategy" --seed "$seed" --batch 4 --buffer "$BUFFER" --max-len 48 \
                --lr 2e-3 --rank 8 "${COMMON[@]}" --json >/dev/null
            losses=()
            for c in "${CATS[@]}"; do
                losses+=("$("$ENGRAM" eval --state "$state" --data "$WORK/$c.test.jsonl" "${COMMON[@]}" --json \
                    | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["loss"], 4))')")
            done
            row+=("${losses[*]}")
        done
        printf '%s\t%s\t%s\t%s\n' "$strategy" "$seed" "$((SECONDS - start))" "$(IFS='|'; echo "${row[*]}")"
    done
done | tee "$WORK/rows.tsv" >&2
python3 - "$WORK/rows.tsv" <<'PY'
import sys, statistics
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
def forgetting(matrix):
    t = len(matrix)
    f = [matrix[t - 1][j] - min(matrix[l][j] for l in range(j, t - 1)) for j in range(t - 1)]
    return sum(f) / len(f)
def iqm(v):
    v = sorted(v); n = len(v); k = n // 4
    mid = v[k:n - k] or v
    return sum(mid) / len(mid)
by = {}
for strategy, seed, secs, mat in rows:
    m = [[float(x) for x in r.split()] for r in mat.split("|")]
    by.setdefault(strategy, []).append((int(seed), forgetting(m), int(secs), m))
naive = iqm([f for _, f, _, _ in by["naive"]]) if "naive" in by else None
print("| strategy | forgetting per seed (nats/token) | IQM | / naive | final held-out loss (seed 0) | s/run |")
print("|---|---|---|---|---|---|")
for s, runs in by.items():
    fs = [f for _, f, _, _ in sorted(runs)]
    m = iqm(fs)
    ratio = f"{m / naive:.2f}" if naive and s != "naive" else "—"
    final = " / ".join(f"{x:.3f}" for x in sorted(runs)[0][3][-1])
    secs = statistics.mean(r[2] for r in runs)
    print(f"| {s} | {' / '.join(f'{f:.3f}' for f in fs)} | {m:.3f} | {ratio} | {final} | {secs:.0f} |")
PY
