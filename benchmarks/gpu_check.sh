#!/usr/bin/env bash
# GPU check of the steering runtime (issue 4): one short prepared run on a CUDA machine.
#
#   device run:  command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=540
#
# Works with that machine's own python3 + CUDA torch (nothing can be installed from
# outside there). `.whl` (ignored by git) carries the scipy-openblas32 wheel the C
# core links; get it here with
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --platform manylinux_2_28_x86_64 -d .whl scipy-openblas32==0.3.34.481.3
# Without it only the ATen op is built and tested (no MalleableModel, no benchmark).
#
# Steps (each logs under $OUT, the device tool's output folder):
#   1. build the ATen op library (csrc/torch/ops.cpp) in place against this torch,
#      and the C core (csrc/core + binding) with gcc against the carried OpenBLAS;
#   2. op tests: tests/native/test_steer_op.py (parametrized over cpu and cuda) and
#      tests/native/test_ops_load.py (the compiled library really loaded);
#   3. a model split across cuda and cpu (accelerate device_map) steered like the
#      simple reference implementation (needs the C core);
#   4. the decode benchmark at batch 1 on cuda: unsteered vs plain vs conditional
#      steering, then respond_batch vs respond_batch_sequential over 16 prompts;
#      random-weight SmolLM2-135M shapes (the embedded GGUF cannot travel).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
export PYTHONPATH="$PWD/python${PYTHONPATH:+:$PYTHONPATH}"
fail=0
step() { echo; echo "=== $* ==="; }

step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
$PY -c "import torch, transformers; print('python', __import__('sys').version.split()[0], '| torch', torch.__version__, '| transformers', transformers.__version__, '| cuda', torch.cuda.is_available())"

if compgen -G ".whl/*.whl" >/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi

step "1. build (in place, this machine's torch)"
$PY - <<'EOF' 2>&1 | tee "$OUT/build_ops.log" | tail -n 5
import os, shutil, sysconfig, time
from torch.utils.cpp_extension import load
t0 = time.time()
os.makedirs("/tmp/as_build", exist_ok=True)
mod = load(name="_torch_ops", sources=["csrc/torch/ops.cpp"], build_directory="/tmp/as_build",
           extra_cflags=["-O2", "-std=c++20"], verbose=False)
dst = "python/activation_steering/_torch_ops" + sysconfig.get_config_var("EXT_SUFFIX")
shutil.copy(mod.__file__, dst)
print(f"built {dst} in {time.time() - t0:.0f}s")
EOF
have_core=0
if $PY -c "import scipy_openblas32, numpy" 2>/dev/null; then
    read -r OB_INC OB_LIB OB_NAME NP_INC PY_INC EXT < <($PY -c "
import scipy_openblas32 as s, numpy, sysconfig
print(s.get_include_dir(), s.get_lib_dir(), s.get_library(), numpy.get_include(), sysconfig.get_paths()['include'], sysconfig.get_config_var('EXT_SUFFIX'))")
    if gcc -shared -fPIC -O2 -std=c11 -Wall -Wextra -Werror -Wno-unused-parameter \
        -DNPY_NO_DEPRECATED_API=NPY_1_7_API_VERSION -Icsrc/core -I"$NP_INC" -I"$OB_INC" -I"$PY_INC" \
        csrc/core/*.c csrc/bindings/_core.c -L"$OB_LIB" -l"$OB_NAME" -Wl,-rpath,"$OB_LIB" -lm \
        -o "python/activation_steering/_core$EXT" 2>&1 | tee "$OUT/build_core.log"; then
        have_core=1 && echo "built _core$EXT"
    else
        echo "C core build FAILED (see build_core.log)"; fail=1
    fi
else
    echo "scipy_openblas32 not available (carry .whl): C core not built; steps 3-4 skipped"
fi

step "2. op tests (cpu + cuda)"
$PY -X faulthandler -m pytest -q -p no:cacheprovider -rs tests/native/test_steer_op.py tests/native/test_ops_load.py 2>&1 | tee "$OUT/op_tests.log" | tail -n 15
[ "${PIPESTATUS[0]}" -eq 0 ] || fail=1

if [ "$have_core" = 1 ]; then
    step "3. model split across cuda and cpu"
    $PY -m pytest -q -p no:cacheprovider -rs \
        "tests/api/test_malleable_model.py::test_model_split_across_devices_matches_single_device" 2>&1 \
        | tee "$OUT/split_test.log" | tail -n 15
    [ "${PIPESTATUS[0]}" -eq 0 ] || fail=1

    step "4. decode benchmark on cuda (batch 1, 128 new tokens) and respond_batch vs sequential (16 prompts)"
    $PY benchmarks/bench_steering.py --device cuda --random-weights --reps 5 \
        --json "$OUT/bench_steering_cuda.json" 2>&1 | tee "$OUT/bench.log" | grep -v "^Loading"
    [ "${PIPESTATUS[0]}" -eq 0 ] || fail=1
fi

step "done: $([ $fail = 0 ] && echo OK || echo FAILURES)"
exit $fail
