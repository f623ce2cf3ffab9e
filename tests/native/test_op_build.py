"""native/build.py: how the ATen op library is found or compiled, and the one fallback warning."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from activation_steering.native import build

PYTHON_DIR = Path(__file__).resolve().parents[2] / "python"


def test_op_sources_are_found():
    names = [p.name for p in build.op_sources()]
    assert "ops.cpp" in names


def test_cache_dir_honours_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ACTIVATION_STEERING_CACHE", str(tmp_path / "c"))
    assert build.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("ACTIVATION_STEERING_CACHE")
    assert build.cache_dir() == Path.home() / ".cache" / "activation_steering"


def test_build_directory_is_per_torch_abi_python_and_source(tmp_path, monkeypatch):
    monkeypatch.setenv("ACTIVATION_STEERING_CACHE", str(tmp_path))
    src = tmp_path / "ops.cpp"
    src.write_text("// one")
    a = build.build_directory([src])
    assert a.parent == tmp_path / "torch_ops"
    abi = int(getattr(torch._C, "_GLIBCXX_USE_CXX11_ABI", 1))
    assert torch.__version__.replace("+", "_") in a.name and f"cxx11abi{abi}" in a.name
    assert sys.implementation.cache_tag in a.name
    src.write_text("// two")
    assert build.build_directory([src]) != a  # edited sources never reuse a stale library


def test_missing_tools_are_named(monkeypatch):
    monkeypatch.setenv("PATH", "")
    monkeypatch.setenv("CXX", "no-such-compiler")
    missing = build._missing_tools()
    assert any("C++ compiler" in m for m in missing) and "ninja" in missing


def test_no_compile_switch_and_the_fallback_message(monkeypatch):
    monkeypatch.setenv(build.NO_COMPILE_ENV, "1")
    reason = build._compile_and_load()
    assert reason is not None and build.NO_COMPILE_ENV in reason
    msg = build.fallback_message(reason)
    assert "pip install ninja" in msg and "g++" in msg and "pure-torch" in msg


def test_without_the_library_the_twins_run_and_warn_once(tmp_path):
    """No prebuilt module and compiling switched off: pure-torch ops, one RuntimeWarning."""
    code = textwrap.dedent("""
        import sys, warnings
        sys.modules["activation_steering._torch_ops"] = None   # no prebuilt module
        import torch
        from activation_steering.native import ops
        assert not ops.HAVE_COMPILED_OPS
        h = torch.randn(2, 5, 8)
        start, end = torch.tensor([0, 1]), torch.tensor([3, 5])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            a = ops.pool_spans(h, start, end)
            b = ops.pool_spans(h, start, end)
        assert torch.equal(a, b) and torch.allclose(a[0], h[0, 0:3].mean(0))
        mine = [w for w in caught if "activation_steering" in str(w.message)]
        assert len(mine) == 1 and issubclass(mine[0].category, RuntimeWarning), [str(w.message) for w in caught]
        print(mine[0].message)
    """)
    env = {**os.environ, "PYTHONPATH": str(PYTHON_DIR), build.NO_COMPILE_ENV: "1",
           "ACTIVATION_STEERING_CACHE": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "pip install ninja" in out.stdout
    assert not (tmp_path / "torch_ops").exists()  # nothing was compiled


def test_concurrent_first_uses_compile_once(tmp_path, monkeypatch):
    """Two first uses at once: the file lock lets one compile; the other loads its result."""
    import threading
    import time

    from torch.utils import cpp_extension

    monkeypatch.setenv("ACTIVATION_STEERING_CACHE", str(tmp_path))
    monkeypatch.setattr(build, "_missing_tools", lambda: [])
    compiles, loads = [], []

    def fake_compile(name, sources, build_directory, **kwargs):
        compiles.append(build_directory)
        time.sleep(0.3)  # long enough for the other thread to reach the lock
        (Path(build_directory) / f"{name}.so").write_bytes(b"library")
        return None

    monkeypatch.setattr(cpp_extension, "load", fake_compile)
    monkeypatch.setattr(torch.ops, "load_library", lambda path: loads.append(path))
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(build._compile_and_load())) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [None, None]
    assert len(compiles) == 1 and len(loads) == 1
