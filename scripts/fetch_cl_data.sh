#!/usr/bin/env bash
# Fetches the continual-learning benchmark data into the engram data cache, from package
# registries only:
#   digits      scikit-learn's bundled digits.csv.gz, from the scikit-learn wheel on PyPI
#   fashion     Fashion-MNIST idx files, from Debian's dataset-fashion-mnist package
#   fortunes    fortune cookie files by category, from Debian's fortunes package
#
# Usage: scripts/fetch_cl_data.sh [digits] [fashion] [fortunes]   (no argument: digits only)
# Destination: $ENGRAM_DATA, else ${XDG_CACHE_HOME:-~/.cache}/engram/data. Files already there
# are kept. Each file is checked before it is moved into place (a partial download never
# lands under the final name).
set -euo pipefail

DATA="${ENGRAM_DATA:-${XDG_CACHE_HOME:-$HOME/.cache}/engram/data}"
mkdir -p "$DATA"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# sha256 of the decompressed digits CSV (1797 rows x 65 columns), the same in every
# scikit-learn release since the file was added.
DIGITS_CSV_SHA256=6ebb3d2fee246a4e99363262ddf8a00a3c41bee6014c373ed9d9216ba7f651b8

fetch_digits() {
    local dst="$DATA/digits.csv.gz"
    [[ -s $dst ]] && return 0
    python3 -m pip download --quiet --no-deps --only-binary=:all: scikit-learn -d "$WORK/sk"
    local whl
    whl="$(ls "$WORK"/sk/scikit_learn-*.whl | head -n1)"
    python3 - "$whl" "$WORK/digits.csv.gz" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read("sklearn/datasets/data/digits.csv.gz"))
PY
    local got
    got="$(gzip -dc "$WORK/digits.csv.gz" | sha256sum | cut -d' ' -f1)"
    if [[ $got != "$DIGITS_CSV_SHA256" ]]; then
        echo "digits.csv.gz: unexpected contents (sha256 $got)" >&2
        return 1
    fi
    mv "$WORK/digits.csv.gz" "$dst"
    echo "digits: $dst"
}

# Downloads a Debian package (no root needed) and unpacks it under $WORK/<pkg>.
unpack_deb() {
    # A fresh machine may have no package lists yet: update once and retry.
    if ! (cd "$WORK" && apt-get download "$1" >/dev/null 2>&1); then
        apt-get update >/dev/null
        (cd "$WORK" && apt-get download "$1" >/dev/null 2>&1)
    fi
    dpkg-deb -x "$WORK"/"$1"_*.deb "$WORK/$1"
}

fetch_fashion() {
    local dst="$DATA/fashion-mnist"
    [[ -s $dst/t10k-labels-idx1-ubyte.gz ]] && return 0
    if [[ -s /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ]]; then
        src=/usr/share/datasets/fashion-mnist
    else
        unpack_deb dataset-fashion-mnist
        src="$WORK/dataset-fashion-mnist/usr/share/datasets/fashion-mnist"
    fi
    for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz \
        t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz; do
        gzip -t "$src/$f"
    done
    mkdir -p "$WORK/fm" && cp "$src"/*.gz "$WORK/fm/"
    rm -rf "$dst" && mv "$WORK/fm" "$dst"
    echo "fashion: $dst"
}

fetch_fortunes() {
    local dst="$DATA/fortunes"
    [[ -s $dst/science ]] && return 0
    if [[ -s /usr/share/games/fortunes/science ]]; then
        src=/usr/share/games/fortunes
    else
        unpack_deb fortunes
        src="$WORK/fortunes/usr/share/games/fortunes"
    fi
    mkdir -p "$WORK/ft"
    find "$src" -maxdepth 1 -type f ! -name '*.dat' ! -name '*.u8' -exec cp {} "$WORK/ft/" \;
    rm -rf "$dst" && mv "$WORK/ft" "$dst"
    echo "fortunes: $dst"
}

[[ $# -eq 0 ]] && set -- digits
for what in "$@"; do
    case $what in
        digits) fetch_digits ;;
        fashion) fetch_fashion ;;
        fortunes) fetch_fortunes ;;
        *) echo "unknown data set: $what (digits, fashion, fortunes)" >&2; exit 2 ;;
    esac
done
