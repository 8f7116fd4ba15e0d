"""The CLI package stays easy to read: each command is argument handling, its work lives in functions."""

from __future__ import annotations

import ast
import inspect
import textwrap

import pytest

from zhrag.cli import app

MAX_BODY_LINES = 30
COMMANDS = {command.name or command.callback.__name__: command.callback for command in app.registered_commands}


def body_lines(function) -> int:
    """Lines of ``function``'s body after its docstring (blank and comment lines inside it included)."""
    source = textwrap.dedent(inspect.getsource(inspect.unwrap(function)))
    definition = ast.parse(source).body[0]
    assert isinstance(definition, ast.FunctionDef)
    body = definition.body
    if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
        body = body[1:]
    return body[-1].end_lineno - body[0].lineno + 1 if body else 0


def test_the_line_count_covers_the_body_without_the_docstring():
    def command(option: int = 1) -> None:
        """Docstring.

        More docstring.
        """
        first = option

        return first

    assert body_lines(command) == 3


def test_every_command_is_registered_from_an_area_module():
    assert len(COMMANDS) == 20
    assert {inspect.unwrap(callback).__module__ for callback in COMMANDS.values()} == {
        "zhrag.cli.ask", "zhrag.cli.kb", "zhrag.cli.evaluate", "zhrag.cli.train", "zhrag.cli.system",
    }


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_body_stays_short(name):
    lines = body_lines(COMMANDS[name])
    assert lines <= MAX_BODY_LINES, f"{name}: {lines} lines; move work that is not argument handling into a function"
