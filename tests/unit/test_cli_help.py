"""The CLI's interface as its users see it: the ``--help`` of ``zhrag`` and of every command, compared to snapshots.

An accidental change of a command, an option, a default or a help text fails here. After an intended change,
regenerate the snapshots and commit them with the change (review the diff: it is the interface change):

    ZHRAG_UPDATE_SNAPSHOTS=1 python -m pytest tests/unit/test_cli_help.py -q

The help is rendered at a fixed width (COLUMNS=100) without colours, so it does not depend on the terminal.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import typer.rich_utils
from typer.main import get_command
from typer.testing import CliRunner

from zhrag.cli import app

SNAPSHOTS = Path(__file__).parent / "snapshots" / "help"
UPDATE = os.environ.get("ZHRAG_UPDATE_SNAPSHOTS") == "1"
ENV = {"COLUMNS": "100", "LINES": "50", "NO_COLOR": "1", "TERM": "dumb", "FORCE_COLOR": None, "PY_COLORS": None}
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
COMMANDS = sorted(get_command(app).commands)


@pytest.fixture(autouse=True)
def plain_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """No terminal features and a fixed width even where CI sets them (typer reads FORCE_COLOR, TERMINAL_WIDTH and
    friends at import)."""
    monkeypatch.setattr(typer.rich_utils, "FORCE_TERMINAL", None)
    monkeypatch.setattr(typer.rich_utils, "MAX_WIDTH", int(ENV["COLUMNS"]))
    monkeypatch.setattr(typer.rich_utils, "COLOR_SYSTEM", None)


def render_help(*command: str) -> str:
    """``zhrag [COMMAND] --help`` as printed."""
    result = CliRunner().invoke(app, [*command, "--help"], env=ENV, prog_name="zhrag")
    assert result.exit_code == 0, result.output
    lines = [line.rstrip() for line in ANSI.sub("", result.output).splitlines()]
    return "\n".join(lines).strip("\n") + "\n"  # no trailing blanks for editors and hooks to strip


def snapshot_path(command: tuple[str, ...]) -> Path:
    return SNAPSHOTS / f"{'_'.join(('zhrag', *command))}.txt"


def check_snapshot(*command: str) -> None:
    path = snapshot_path(command)
    rendered = render_help(*command)
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rendered, encoding="utf-8")
        return
    assert path.is_file(), f"no snapshot {path.name}: regenerate with ZHRAG_UPDATE_SNAPSHOTS=1 (see this module's doc)"
    assert rendered == path.read_text(encoding="utf-8"), (
        f"`zhrag {' '.join(command)} --help` changed; if intended, regenerate with ZHRAG_UPDATE_SNAPSHOTS=1"
    )


def test_the_help_of_zhrag_matches_its_snapshot() -> None:
    check_snapshot()


@pytest.mark.parametrize("command", COMMANDS)
def test_the_help_of_each_command_matches_its_snapshot(command: str) -> None:
    check_snapshot(command)


def test_every_snapshot_belongs_to_a_command() -> None:
    """A removed or renamed command leaves no stale snapshot behind."""
    expected = {snapshot_path(()).name, *(snapshot_path((name,)).name for name in COMMANDS)}
    if UPDATE:
        for path in SNAPSHOTS.glob("*.txt"):
            if path.name not in expected:
                path.unlink()
    assert {path.name for path in SNAPSHOTS.glob("*.txt")} == expected


def test_the_help_lists_every_command() -> None:
    listed = render_help()
    assert all(re.search(rf"^\s*│?\s*{re.escape(name)}\s", listed, re.MULTILINE) for name in COMMANDS)
