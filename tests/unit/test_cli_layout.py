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


def test_the_eval_commands_share_one_model_group_in_their_own_words():
    from typer.main import get_command

    commands = get_command(app).commands
    helps = {}
    for name, role, alias in (("eval-reading", "answer", "--answer-adapter"), ("eval-tools", "agent", "--answer-adapter"),
                              ("eval-judge", "judge", "--judge-adapter")):
        options = {parameter.name: parameter for parameter in commands[name].params}
        assert {"model", "adapter", "engine", "device"} <= set(options), name
        assert options["adapter"].opts == ["--adapter", alias]
        assert options["adapter"].help == f"LoRA adapter of the {role} model."
        helps[name] = options["model"].help
    assert helps["eval-judge"].startswith("Judge model: ") and helps["eval-tools"].startswith("Agent model: ")


@pytest.mark.parametrize(("engine", "record_engine", "recorded"), [
    ("auto", False, None), ("transformers", False, "transformers"), ("auto", True, "auto"),
])
def test_the_run_model_records_its_engine_where_asked_or_not_auto(fake_llm, engine, record_engine, recorded):
    from zhrag.cli.evaluate import AnswerModelOptions, _run_model
    from zhrag.models.registry import registered_llm

    name, _ = fake_llm(lambda text: "答")
    llm, record = _run_model(AnswerModelOptions(model=name, engine=engine), record_engine=record_engine)
    assert llm is registered_llm(name)
    assert record == {"model": name, "adapter": None, **({"engine": recorded} if recorded else {})}
