#!/usr/bin/env bash
# The oldest transformers and numpy that pyproject.toml declares, installed next to
# torch 2.13.0 (the local wheel) in a fresh venv, then the fast tests against them
# (CI step; `make min-deps-check`). The floors are read from pyproject.toml, so the
# check follows them. Exits non-zero on any failure.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d /tmp/as-min-deps.XXXXXX)"
trap 'rm -rf "$work"' EXIT
py="${PYTHON:-python3}"
floors=$($py - "$root/pyproject.toml" <<'PY'
import re, sys, tomllib
deps = tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]
out = []
for d in deps:
    m = re.match(r"^(transformers|numpy)>=([^,;\s]+)", d)
    if m:
        out.append(f"{m.group(1)}=={m.group(2)}")
print(" ".join(out))
PY
)
echo "--- min-deps-check: $floors with torch==2.13.0"
$py -m venv "$work/venv"
V="$work/venv/bin"
"$V/pip" install -q torch==2.13.0
"$V/pip" install -q $floors pytest hypothesis scikit-learn "$root"
"$V/pip" list 2>/dev/null | grep -iE "^(torch|transformers|numpy|tokenizers) "
cd "$work"  # import the installed package, not the source tree
cp -r "$root/tests" "$work/tests"
cp "$root/pyproject.toml" "$work/"
cp -r "$root/docs" "$work/docs"   # the doc-snippet test runs these pages
cp -r "$root/benchmarks" "$work/benchmarks"   # a test checks a benchmark script's bookkeeping
ACTIVATION_STEERING_CACHE="$work/cache" HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 \
  "$V/python" -m pytest -q -x -m "not slow" -p no:cacheprovider tests
