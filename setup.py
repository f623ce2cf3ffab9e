"""Build of activation_steering's two native modules.

- ``activation_steering._core``: the C11 core (csrc/core) plus its CPython/NumPy
  binding (csrc/bindings). Links OpenBLAS from the ``scipy-openblas32`` wheel
  (symbols prefixed ``scipy_``), never torch.
- ``activation_steering._torch_ops``: the ATen ops (csrc/torch), compiled against
  the torch that is *already installed*. Build with ``--no-build-isolation`` so a
  build environment can never pull a different torch (torch is deliberately not in
  ``[build-system] requires``).

``AS_SANITIZE=1`` builds both with AddressSanitizer + UndefinedBehaviorSanitizer
(run the tests with ``LD_PRELOAD=$(gcc -print-file-name=libasan.so)``; see the
Makefile's ``test-asan`` target).
"""
import glob
import os

import numpy as np
import scipy_openblas32
from setuptools import setup, Extension

SANITIZE = os.environ.get("AS_SANITIZE") == "1"
SAN_FLAGS = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined"] if SANITIZE else []
OPT = ["-O1", "-g"] if SANITIZE else ["-O2"]

blas_lib_dir = scipy_openblas32.get_lib_dir()

core = Extension(
    "activation_steering._core",
    sources=sorted(glob.glob("csrc/core/*.c")) + ["csrc/bindings/_core.c"],
    include_dirs=["csrc/core", np.get_include(), scipy_openblas32.get_include_dir()],
    library_dirs=[blas_lib_dir],
    libraries=[scipy_openblas32.get_library()],
    # The absolute rpath serves this checkout's venv; $ORIGIN covers a wheel
    # installed next to scipy_openblas32 in site-packages.
    runtime_library_dirs=[blas_lib_dir, "$ORIGIN/../scipy_openblas32/lib"],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    extra_compile_args=["-std=c11", "-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter", *OPT, *SAN_FLAGS],
    extra_link_args=SAN_FLAGS,
)

ext_modules = [core]
if os.environ.get("AS_NO_TORCH_OPS") != "1":
    # Plain setuptools build_ext for both modules: torch's BuildExtension would
    # compile the C core as C++. CppExtension only supplies torch's include and
    # library paths; the flags BuildExtension would add are added here.
    import torch
    from torch.utils.cpp_extension import CppExtension, include_paths

    # -isystem: warnings-as-errors applies to our code, not to torch's headers.
    torch_system_includes = [flag for p in include_paths() for flag in ("-isystem", p)]

    abi = int(getattr(torch._C, "_GLIBCXX_USE_CXX11_ABI", 1))
    ext_modules.append(
        CppExtension(
            "activation_steering._torch_ops",
            sources=sorted(glob.glob("csrc/torch/*.cpp")),
            extra_compile_args=["-std=c++20", *torch_system_includes, f"-D_GLIBCXX_USE_CXX11_ABI={abi}", "-Wall", "-Wextra", "-Werror",
                                "-Wno-unused-parameter", *OPT, *SAN_FLAGS],
            extra_link_args=SAN_FLAGS,
        )
    )

setup(ext_modules=ext_modules)
