"""How the ATen op library (``torch.ops.activation_steering.*``) is found or compiled.

The ops in ``csrc/torch/ops.cpp`` must be compiled against the exact torch that
runs them, so they are not built into the wheel. ``load_ops()`` tries, in order:

1. a prebuilt in-place module ``activation_steering._torch_ops`` (the project's
   own development build, ``make build``), if it imports against this torch;
2. a library compiled at first use by ``torch.utils.cpp_extension.load`` from the
   C++ sources shipped inside the package, cached per torch version, C++ ABI,
   Python version and source hash under ``<cache>/torch_ops/`` (``<cache>`` is
   ``$ACTIVATION_STEERING_CACHE`` or ``~/.cache/activation_steering``). A file lock
   makes concurrent first uses compile once.

When neither works (no C++ compiler, no ninja, a build error, or
``ACTIVATION_STEERING_NO_COMPILE=1``) it returns the reason; ``native.ops`` then
runs the pure-torch twins and warns once with ``fallback_message(reason)``.

What this module deliberately is not: the op definitions (csrc/torch/ops.cpp), the
fake kernels or the fallback dispatch (native/ops.py).
"""
from __future__ import annotations

import hashlib
import importlib
import logging
import os
import shutil
import sys
import sysconfig
import time
from pathlib import Path

logger = logging.getLogger("activation_steering.native.build")

#: Python module name of the in-place development build (setup.py, AS_BUILD_TORCH_OPS=1).
PREBUILT_MODULE = "activation_steering._torch_ops"
#: Environment variable that disables compiling at first use (the fallback then runs).
NO_COMPILE_ENV = "ACTIVATION_STEERING_NO_COMPILE"
#: What a user needs for the compiled ops; quoted by the fallback warning.
INSTALL_HINT = (
    "install a C++ compiler (Debian/Ubuntu: `apt-get install g++`; macOS: `xcode-select --install`) "
    "and ninja (`pip install ninja`), then restart Python; the ops then compile once (about a minute) "
    "and are cached"
)


def cache_dir() -> Path:
    """The package cache directory: ``$ACTIVATION_STEERING_CACHE`` or ``~/.cache/activation_steering``."""
    env = os.environ.get("ACTIVATION_STEERING_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "activation_steering"


def op_sources() -> list[Path]:
    """The C++ sources of the ATen ops: shipped in the package (wheel, sdist) or in the source tree.

    Raises:
        FileNotFoundError: neither location holds ``ops.cpp``.
    """
    here = Path(__file__).resolve().parent
    for folder in (here / "csrc", here.parents[2] / "csrc" / "torch"):
        found = sorted(folder.glob("*.cpp"))
        if found:
            return found
    raise FileNotFoundError(f"ops.cpp not found in {here / 'csrc'} or the source tree")


def build_directory(sources: list[Path]) -> Path:
    """Where the op library for this torch / ABI / Python / source version is cached."""
    import torch

    digest = hashlib.sha256()
    for src in sources:
        digest.update(src.read_bytes())
    abi = int(getattr(torch._C, "_GLIBCXX_USE_CXX11_ABI", 1))
    tag = (f"torch-{torch.__version__}-cxx11abi{abi}-{sys.implementation.cache_tag}-"
           f"{sysconfig.get_platform()}-{digest.hexdigest()[:12]}")
    return cache_dir() / "torch_ops" / tag.replace("+", "_").replace("/", "_")


def _missing_tools() -> list[str]:
    missing = []
    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx) is None and shutil.which("g++") is None and shutil.which("clang++") is None:
        missing.append(f"a C++ compiler ({cxx!r} is not on PATH)")
    try:
        from torch.utils.cpp_extension import verify_ninja_availability

        verify_ninja_availability()
    except Exception:  # RuntimeError when ninja is absent
        missing.append("ninja")
    return missing


def _load_prebuilt() -> str | None:
    """Import the in-place build; None when loaded, else why not."""
    try:
        importlib.import_module(PREBUILT_MODULE)
        return None
    except ImportError as exc:
        return f"{PREBUILT_MODULE}: {exc}"


def _compile_and_load() -> str | None:
    """Compile (or reuse the cached) op library and load it; None when loaded, else why not."""
    if os.environ.get(NO_COMPILE_ENV) == "1":
        return f"{NO_COMPILE_ENV}=1 is set"
    missing = _missing_tools()
    if missing:
        return "missing " + " and ".join(missing)
    import torch
    from torch.utils import cpp_extension

    try:
        sources = op_sources()
        build_dir = build_directory(sources)
        build_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot prepare the build directory: {exc}"

    from filelock import FileLock  # a dependency of torch

    library = build_dir / "_torch_ops.so"
    with FileLock(str(build_dir / "build.lock")):
        if library.exists():  # cached for this torch + sources: no ninja run needed
            try:
                torch.ops.load_library(str(library))
                logger.debug("ATen ops loaded from the cache %s", library)
                return None
            except OSError as exc:  # e.g. a truncated file: rebuild below
                logger.warning("cached op library %s does not load (%s); rebuilding it", library, exc)
        else:
            logger.warning("compiling activation_steering's ATen ops for torch %s (once per torch version; "
                           "about a minute) into %s", torch.__version__, build_dir)
        started = time.perf_counter()
        try:
            path = cpp_extension.load(
                name="_torch_ops",
                sources=[str(s) for s in sources],
                extra_cflags=["-O2", "-std=c++20"],
                build_directory=str(build_dir),
                is_python_module=False,
                verbose=False,
            )
        except Exception as exc:  # compiler errors arrive as RuntimeError / subprocess errors
            log = build_dir / "build.ninja"
            return f"compiling {sources[0].name} failed ({type(exc).__name__}: {str(exc)[-400:]}; build files in {log.parent})"
        logger.info("ATen ops loaded from %s in %.1f s", path or library, time.perf_counter() - started)
    return None


def load_ops() -> tuple[bool, str | None]:
    """Make ``torch.ops.activation_steering.*`` available.

    Returns:
        ``(True, None)`` when the compiled ops are registered, else ``(False, reason)``
        where ``reason`` says why (pass it to ``fallback_message``).
    """
    prebuilt_error = _load_prebuilt()
    if prebuilt_error is None:
        logger.debug("ATen ops: prebuilt %s", PREBUILT_MODULE)
        return True, None
    logger.debug("ATen ops: no usable prebuilt module (%s); compiling at first use", prebuilt_error)
    compile_error = _compile_and_load()
    if compile_error is None:
        return True, None
    return False, compile_error


def fallback_message(reason: str | None) -> str:
    """The one warning shown when the pure-torch twins replace the compiled ops."""
    msg = (f"activation_steering: compiled ATen ops unavailable ({reason}); using the pure-torch ops, "
           f"which give the same results more slowly. To get the compiled ops, {INSTALL_HINT}.")
    if NO_COMPILE_ENV not in (reason or ""):
        msg += f" Set {NO_COMPILE_ENV}=1 to choose the pure-torch ops without this attempt."
    return msg
