"""Every ```python block in docs/ runs.

Each page's blocks run top to bottom in one namespace (later blocks use earlier
names), in a temporary working directory. `load_default_model` returns a tiny
random-weight Llama with the embedded model's 30 layers, so layer ids in the docs
stay valid; the `slow` variant runs the same pages on the real embedded model.
A block preceded by the line `<!-- doc-test: slow-only -->` runs only in the slow
variant (for code that needs the real model's behaviour).
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
FENCE = re.compile(r"(?P<marker><!-- doc-test: slow-only -->\s*\n)?^```python\n(?P<code>.*?)^```", re.S | re.M)


def blocks(page: Path) -> list[tuple[str, bool]]:
    """(code, slow_only) for each ```python block of `page`."""
    return [(m.group("code"), m.group("marker") is not None) for m in FENCE.finditer(page.read_text())]


PAGES = sorted(p for p in DOCS.glob("*.md") if blocks(p))


def test_docs_have_python_blocks():
    assert any(p.name == "quickstart.md" for p in PAGES), PAGES


def _run_page(page: Path, slow: bool) -> None:
    ns: dict = {"__name__": f"docs_{page.stem}"}
    for i, (code, slow_only) in enumerate(blocks(page)):
        if slow_only and not slow:
            continue
        try:
            exec(compile(code, f"{page.name}[block {i + 1}]", "exec"), ns)
        except Exception as exc:
            raise AssertionError(f"{page.name}, python block {i + 1} failed:\n{code}") from exc


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """A temporary cwd and log dir; GlobalConfig switches restored afterwards."""
    from activation_steering.config import CLASS_NAMES, GlobalConfig

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(GlobalConfig, "log_dir", tmp_path / "logs")
    verbose, files = dict(GlobalConfig._verbose), dict(GlobalConfig._file_output)
    yield tmp_path
    for name in CLASS_NAMES:
        if GlobalConfig.should_log_to_file(name):
            GlobalConfig.set_file_output(False, class_name=name)
    GlobalConfig._verbose.clear()
    GlobalConfig._verbose.update(verbose)
    GlobalConfig._file_output.update(files)
    GlobalConfig._apply()


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_doc_page_runs_on_a_tiny_model(page, isolated, monkeypatch):
    from tiny_models import make_model, make_tokenizer

    import activation_steering.models as models

    monkeypatch.setattr(models, "load_default_model",
                        lambda *a, **k: (make_model("llama", n_layers=30, hidden=64), make_tokenizer()))
    _run_page(page, slow=False)


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_doc_page_runs_on_the_embedded_model(page, isolated):
    _run_page(page, slow=True)
