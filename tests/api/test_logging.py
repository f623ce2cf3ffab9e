"""Library-grade logging: stdlib loggers under "activation_steering", quiet by default,
records propagate (caplog / basicConfig see them), GlobalConfig.set_verbose never prints
a line twice, file output as the FAQ shows, no files on import."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PYTHON_DIR = Path(__file__).resolve().parents[2] / "python"


def run(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter (no pytest handlers on the root logger)."""
    env = {**os.environ, "PYTHONPATH": f"{PYTHON_DIR}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, check=True)


@pytest.fixture(autouse=True)
def default_switches():
    """Each test starts from GlobalConfig's defaults (other tests switch classes on and off)."""
    from activation_steering.config import GlobalConfig

    saved = dict(GlobalConfig._verbose), dict(GlobalConfig._file_output)
    GlobalConfig._verbose.clear()
    GlobalConfig._apply()
    yield
    GlobalConfig._verbose.clear()
    GlobalConfig._verbose.update(saved[0])
    GlobalConfig._file_output.update(saved[1])
    GlobalConfig._apply()


def test_import_adds_only_a_null_handler_and_prints_nothing(tmp_path):
    out = run("""
        import logging, activation_steering
        from activation_steering.config import log
        handlers = logging.getLogger("activation_steering").handlers
        assert [type(h).__name__ for h in handlers] == ["NullHandler"], handlers
        assert logging.getLogger().handlers == []
        log("MalleableModel", "quiet please")
    """, tmp_path)
    assert "quiet please" not in out.stderr + out.stdout
    assert list(tmp_path.iterdir()) == []


def test_records_propagate_to_caplog_and_are_quiet_by_default(caplog):
    from activation_steering.config import log

    log("MalleableModel", "not at INFO by default")
    assert not [r for r in caplog.records if r.name.startswith("activation_steering")]
    caplog.set_level(logging.INFO, logger="activation_steering")
    log("MalleableModel", "now visible")
    rec = [r for r in caplog.records if r.getMessage() == "now visible"]
    assert len(rec) == 1 and rec[0].name == "activation_steering.MalleableModel" and rec[0].levelno == logging.INFO


def test_set_verbose_under_caplog_adds_no_second_output(caplog, capsys):
    from activation_steering.config import GlobalConfig, log

    GlobalConfig.set_verbose(True, class_name="SteeringVector")
    try:
        log("SteeringVector", "seen once")
    finally:
        GlobalConfig.set_verbose(False, class_name="SteeringVector")
    assert [r.getMessage() for r in caplog.records].count("seen once") == 1
    assert "seen once" not in capsys.readouterr().err  # pytest's handler shows it; ours stays silent


@pytest.mark.parametrize("order", ["bare", "basicConfig first", "basicConfig after"])
def test_set_verbose_prints_each_line_exactly_once(tmp_path, order):
    before = "logging.basicConfig(level=logging.INFO, format='%(name)s|%(message)s')" if order == "basicConfig first" else ""
    after = "logging.basicConfig(level=logging.INFO, format='%(name)s|%(message)s')" if order == "basicConfig after" else ""
    out = run(f"""
        import logging
        {before}
        from activation_steering.config import GlobalConfig, log
        GlobalConfig.set_verbose(True, class_name="MalleableModel")
        {after}
        log("MalleableModel", "hello once")
        log("SteeringDataset", "not verbose")
    """, tmp_path)
    assert out.stderr.count("hello once") == 1, out.stderr
    if order == "bare":
        assert "[MalleableModel] hello once" in out.stderr
        assert "not verbose" not in out.stderr
    else:
        assert "activation_steering.MalleableModel|hello once" in out.stderr


def test_global_verbose_and_leash_layer_stays_off(tmp_path):
    out = run("""
        from activation_steering.config import GlobalConfig, log
        GlobalConfig.set_verbose(True)
        log("SteeringVector", "follows global")
        log("LeashLayer", "chatty, off unless set")
        GlobalConfig.set_verbose(True, class_name="LeashLayer")
        log("LeashLayer", "now on")
    """, tmp_path)
    assert "[SteeringVector] follows global" in out.stderr
    assert "chatty" not in out.stderr and out.stderr.count("[LeashLayer] now on") == 1


def test_faq_file_output_one_file_per_class(tmp_path, monkeypatch):
    from activation_steering.config import GlobalConfig, log

    monkeypatch.setattr(GlobalConfig, "log_dir", tmp_path / "logs")
    GlobalConfig.set_verbose(True, class_name="LeashLayer")
    GlobalConfig.set_file_output(True, class_name="LeashLayer")
    GlobalConfig.set_file_output(True, class_name="SteeringDataset")
    try:
        leash, data = GlobalConfig.get_file_path("LeashLayer"), GlobalConfig.get_file_path("SteeringDataset")
        assert leash != data and not (tmp_path / "logs").exists()  # nothing until a record arrives
        log("LeashLayer", "to the leash file")
        log("SteeringDataset", "to the dataset file")
        assert "to the leash file" in Path(leash).read_text() and "dataset" not in Path(leash).read_text()
        assert "to the dataset file" in Path(data).read_text()
    finally:
        GlobalConfig.set_file_output(False, class_name="LeashLayer")
        GlobalConfig.set_file_output(False, class_name="SteeringDataset")
        GlobalConfig.set_verbose(False, class_name="LeashLayer")


def test_console_handler_writes_through_tqdm(tmp_path):
    """With a bar on screen, a log line goes through tqdm.write (bar cleared, line, bar redrawn)."""
    out = run("""
        from unittest import mock
        import tqdm
        from activation_steering.config import GlobalConfig, log
        GlobalConfig.set_verbose(True, class_name="MalleableModel")
        with mock.patch.object(tqdm.tqdm, "write", wraps=tqdm.tqdm.write) as write:
            with tqdm.tqdm(total=3, desc="bar") as bar:
                log("MalleableModel", "between updates")
                bar.update(3)
        assert write.call_count == 1 and "between updates" in write.call_args[0][0]
    """, tmp_path)
    assert out.stderr.count("between updates") == 1
