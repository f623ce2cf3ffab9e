"""Build of activation_steering's native code.

- ``activation_steering._core`` (always): the C11 core (csrc/core) plus its
  CPython/NumPy binding (csrc/bindings). Links OpenBLAS from the ``scipy-openblas32``
  wheel (symbols prefixed ``scipy_``), never torch, so it builds in pip's normal
  build isolation (pyproject.toml ``[build-system] requires``). At run time the
  package loads scipy_openblas32's library before importing ``_core``
  (activation_steering/__init__.py), so no run path into the build environment
  is needed in any install layout (wheel, sdist, editable, ``--user``).
- The ATen ops (csrc/torch/ops.cpp) are NOT compiled here for users: the sources
  are shipped inside the package (``activation_steering/native/csrc/``) and
  compiled at first use against the torch that runs them
  (activation_steering/native/build.py). The project's own development build
  (``make build``) sets ``AS_BUILD_TORCH_OPS=1`` to build them in place ahead of time
  as ``activation_steering._torch_ops``, against the installed torch.

Environment switches (all off in a user's ``pip install``):
``AS_WERROR=1`` warnings are errors (the Makefile and CI set it);
``AS_BUILD_TORCH_OPS=1`` also build ``_torch_ops`` (needs torch installed, so use it
with ``--no-build-isolation`` or ``build_ext --inplace``);
``AS_SANITIZE=1`` AddressSanitizer + UBSan (Makefile ``test-asan``).

numpy, scipy_openblas32 and torch are imported only inside the build step, so
``setup.py sdist`` / ``egg_info`` run without them and a missing one is reported
with the command that fixes it.
"""
import glob
import os
import shutil
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
SANITIZE = os.environ.get("AS_SANITIZE") == "1"
WERROR = ["-Werror"] if os.environ.get("AS_WERROR") == "1" else []
BUILD_TORCH_OPS = os.environ.get("AS_BUILD_TORCH_OPS") == "1"
SAN_FLAGS = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined"] if SANITIZE else []
OPT = ["-O1", "-g"] if SANITIZE else ["-O2"]
WARN = ["-Wall", "-Wextra", *WERROR, "-Wno-unused-parameter"]


def _need(module: str, pip_name: str):
    try:
        return __import__(module)
    except ImportError as exc:
        raise SystemExit(
            f"building activation_steering needs {pip_name}: it is a build requirement in pyproject.toml, "
            f"installed automatically by a plain `pip install`. With --no-build-isolation, install it first "
            f"(`pip install {pip_name}`)."
        ) from exc


class BuildExt(build_ext):
    """Fills in numpy / OpenBLAS / torch paths at build time instead of at import of setup.py."""

    def build_extensions(self):
        for ext in self.extensions:
            if ext.name == "activation_steering._core":
                np = _need("numpy", "numpy")
                blas = _need("scipy_openblas32", "scipy-openblas32")
                ext.include_dirs += [np.get_include(), blas.get_include_dir()]
                ext.library_dirs += [blas.get_lib_dir()]
                ext.libraries += [blas.get_library()]
            elif ext.name == "activation_steering._torch_ops":
                torch = _need("torch", "torch")
                from torch.utils.cpp_extension import include_paths

                # -isystem: warnings-as-errors applies to our code, not to torch's headers.
                ext.extra_compile_args += [flag for p in include_paths() for flag in ("-isystem", p)]
                abi = int(getattr(torch._C, "_GLIBCXX_USE_CXX11_ABI", 1))
                ext.extra_compile_args.append(f"-D_GLIBCXX_USE_CXX11_ABI={abi}")
                ext.library_dirs += [os.path.join(os.path.dirname(torch.__file__), "lib")]
        super().build_extensions()


class BuildPy(build_py):
    """Ships the ATen op sources inside the package, for compilation at first use."""

    def run(self):
        package = Path(self.build_lib) / "activation_steering"
        # build/lib outlives builds: modules since moved or deleted, and the op library
        # that `build_ext --inplace` (make build) leaves there for one torch, must never
        # reach a wheel. Start the package from scratch (build_ext runs after this).
        shutil.rmtree(package, ignore_errors=True)
        super().run()
        target = package / "native" / "csrc"
        target.mkdir(parents=True, exist_ok=True)
        for src in sorted((HERE / "csrc" / "torch").glob("*.cpp")):
            shutil.copy2(src, target / src.name)


core = Extension(
    "activation_steering._core",
    sources=sorted(glob.glob("csrc/core/*.c")) + ["csrc/bindings/_core.c"],
    include_dirs=["csrc/core"],
    # Found at run time because the package loads scipy_openblas32's library first;
    # $ORIGIN also covers a wheel installed next to scipy_openblas32.
    runtime_library_dirs=["$ORIGIN/../scipy_openblas32/lib"],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    extra_compile_args=["-std=c11", *WARN, *OPT, *SAN_FLAGS],
    extra_link_args=SAN_FLAGS,
)

ext_modules = [core]
if BUILD_TORCH_OPS:
    # Plain setuptools build_ext: torch's BuildExtension would compile the C core as C++.
    ext_modules.append(
        Extension(
            "activation_steering._torch_ops",
            sources=sorted(glob.glob("csrc/torch/*.cpp")),
            language="c++",
            libraries=["c10", "torch", "torch_cpu", "torch_python"],
            extra_compile_args=["-std=c++20", *WARN, *OPT, *SAN_FLAGS],
            extra_link_args=SAN_FLAGS,
        )
    )

setup(ext_modules=ext_modules, cmdclass={"build_ext": BuildExt, "build_py": BuildPy})
