"""docs/cli.md's tables are the `--help` of each command: the same flags (one row each) and the
same defaults, so the two cannot drift apart again."""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from activation_steering import cli

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    for action in cli.build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no sub-commands")


def _table(command: str) -> dict[str, str]:
    """{flag: default column} of the table under '## command' in docs/cli.md."""
    section = re.split(r"^## ", DOC.read_text(encoding="utf-8"), flags=re.M)
    text = next(s for s in section if s.startswith(command + "\n"))
    rows: dict[str, str] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("| `--") or len(cells) != 3:
            continue
        flags = re.findall(r"`(--[a-z0-9-]+)", cells[0])
        assert len(flags) == 1, f"{command}: one flag per row: {line}"
        assert flags[0] not in rows, f"{command}: {flags[0]} twice"
        rows[flags[0]] = cells[2].replace("`", "")
    return rows


def _help_default(action: argparse.Action) -> str:
    text = " ".join((action.help % {"default": action.default} if "%(" in action.help else action.help).split())
    m = re.search(r"\(default: (.*)\)$", text)
    return m.group(1) if m else "required"


@pytest.mark.parametrize("command", ["demo", "train", "search", "steer"])
def test_docs_table_is_the_help(command):
    parser = _subparsers()[command]
    helped = {a.option_strings[-1]: _help_default(a) for a in parser._actions
              if not isinstance(a, argparse._HelpAction)}
    assert _table(command) == helped
