"""The command line documents itself: every flag has help text naming its default
(or that it is required), --version prints the package version, and the program is
called `activation-steering` when run as the console script."""
from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from activation_steering import __version__
from activation_steering import cli


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no sub-commands")


def test_every_flag_has_help_with_its_default():
    parser = cli.build_parser()
    subs = _subparsers(parser)
    assert set(subs) == {"demo", "train", "search", "steer"}
    for name, sub in subs.items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            flag = "/".join(action.option_strings)
            assert action.help, f"{name} {flag}: no help text"
            assert "default" in action.help or "required" in action.help, f"{name} {flag}: {action.help!r}"
        text = sub.format_help()
        assert "%(default)" not in text


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip().endswith(__version__)


@pytest.mark.parametrize("argv0, prog", [("/usr/bin/activation-steering", "activation-steering"),
                                         ("/x/activation_steering/__main__.py", "python -m activation_steering")])
def test_program_name(monkeypatch, argv0, prog):
    monkeypatch.setattr(sys, "argv", [argv0])
    assert cli.build_parser().prog == prog
    assert cli.build_parser().format_usage().startswith(f"usage: {prog}")


def test_module_help_runs():
    out = subprocess.run([sys.executable, "-m", "activation_steering", "steer", "--help"],
                         capture_output=True, text=True, check=True)
    assert "usage: python -m activation_steering steer" in out.stdout and "(default: 10-15)" in out.stdout
