"""Import surface and side-effect freedom of the package."""
import os
import subprocess
import sys


def test_import_creates_no_files(tmp_path):
    code = ("import activation_steering, activation_steering.config as c; "
            "from activation_steering.config import GlobalConfig; GlobalConfig.get_file_path('LeashLayer')")
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True,
                   env={**os.environ, "ACTIVATION_STEERING_LOG_DIR": ""})
    assert list(tmp_path.iterdir()) == []


def test_global_config_faq_snippet(tmp_path, monkeypatch):
    from activation_steering.config import GlobalConfig, log

    monkeypatch.setattr(GlobalConfig, "log_dir", tmp_path / "logs")
    GlobalConfig.set_verbose(True, class_name="LeashLayer")
    GlobalConfig.set_file_output(True, class_name="LeashLayer")
    log_path = GlobalConfig.get_file_path("LeashLayer")
    assert log_path.startswith(str(tmp_path / "logs")) and "LeashLayer" in log_path
    assert GlobalConfig.is_verbose("LeashLayer") and GlobalConfig.should_log_to_file("LeashLayer")
    log("LeashLayer", "hello from the test")
    assert "hello from the test" in open(log_path).read()
    GlobalConfig.set_verbose(False, class_name="LeashLayer")
    GlobalConfig.set_file_output(False, class_name="LeashLayer")


def test_global_config_rejects_unknown_class():
    import pytest

    from activation_steering.config import GlobalConfig

    with pytest.raises(ValueError, match="class_name"):
        GlobalConfig.set_verbose(True, class_name="Nope")
