#!/usr/bin/env bash
# A user's install, from scratch (CI step; `make install-check`):
#   fresh venv -> torch from the local wheel -> plain `pip install .` (no flags)
#   -> import + tiny train/steer smoke test (the ATen ops compile at first use)
#   -> `python -m build` (sdist, then a wheel built from that sdist) and the
#   wheel's contents (py.typed, the op sources; no prebuilt op library).
# Prints the time of each step. Exits non-zero on any failure.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d /tmp/as-install-check.XXXXXX)"
trap 'rm -rf "$work"' EXIT
py="${PYTHON:-python3}"
step() { echo "--- install-check: $* ($(( SECONDS - t_step )) s since previous step)"; t_step=$SECONDS; }
t_step=$SECONDS; t_all=$SECONDS

$py -m venv "$work/venv"
V="$work/venv/bin"
step "fresh venv"
"$V/pip" install -q torch==2.13.0
step "torch 2.13.0 from the local wheel"
"$V/pip" install -q "$root"
step "plain pip install ."
(cd "$work" && ACTIVATION_STEERING_CACHE="$work/cache" HF_HUB_OFFLINE=1 PYTHONPATH="$root/tests" \
   "$V/python" "$root/.ci/smoke_test.py")
step "smoke test (includes the first-use compile of the ATen ops)"
(cd "$work" && ACTIVATION_STEERING_CACHE="$work/cache" HF_HUB_OFFLINE=1 PYTHONPATH="$root/tests" \
   "$V/python" "$root/.ci/smoke_test.py")
step "smoke test again (cached op library)"
"$V/activation-steering" --version
"$V/pip" install -q -c "$root/constraints.txt" build
# Build from a clean copy of the tracked files, so no in-place build output can leak in.
mkdir -p "$work/src"
(cd "$root" && git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf -) | tar -xf - -C "$work/src"
"$V/python" -m build --outdir "$work/dist" "$work/src" > "$work/build.log" 2>&1 || { tail -50 "$work/build.log"; exit 1; }
ls -l "$work/dist"
"$V/python" - "$work/dist" <<'PY'
import sys, zipfile, tarfile, pathlib
dist = pathlib.Path(sys.argv[1])
wheel, = dist.glob("*.whl"); sdist, = dist.glob("*.tar.gz")
names = zipfile.ZipFile(wheel).namelist()
for need in ("activation_steering/py.typed", "activation_steering/native/csrc/ops.cpp", "activation_steering/_version.py"):
    assert need in names, f"{need} missing from {wheel.name}"
assert any(n.startswith("activation_steering/_core.") for n in names), "_core missing from the wheel"
assert not any("_torch_ops" in n for n in names), "a prebuilt op library leaked into the wheel"
snames = tarfile.open(sdist).getnames()
assert any(n.endswith("csrc/torch/ops.cpp") for n in snames) and any(n.endswith("csrc/core/as_core.h") for n in snames)
print(f"wheel {wheel.name}: {len(names)} files, py.typed and op sources present; sdist {sdist.name} ok")
PY
step "python -m build (sdist + wheel) and their contents"
echo "--- install-check: passed in $(( SECONDS - t_all )) s"
