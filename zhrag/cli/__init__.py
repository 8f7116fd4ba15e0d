"""Command-line interface: ``zhrag ask | demo | index | eval | ... | serve-mcp`` (``zhrag --help`` lists them).

One module per area holds the commands and their small helpers; this module registers them on :data:`app` and
runs them (:func:`main`):

- :mod:`zhrag.cli.ask`: ask, demo, search (answer and search questions)
- :mod:`zhrag.cli.kb`: index, serve-mcp (the knowledge base)
- :mod:`zhrag.cli.evaluate`: eval, eval-retrieval, eval-reading, eval-tools, eval-judge, report, compare,
  tune-abstention
- :mod:`zhrag.cli.train`: build-data, train, generate-data, review, export-pairs (fine-tuning data and adapters)
- :mod:`zhrag.cli.system`: serve-model, doctor (models and the installation)
- :mod:`zhrag.cli.options`: the options shared by several commands, declared once; :mod:`zhrag.cli.common`:
  helpers of several areas.

Every user-caused problem surfaces as one line on stderr (``error: ...``) and exit code 2.
"""

from __future__ import annotations

import sys

import typer

from zhrag.cli import ask, evaluate, kb, system, train
from zhrag.errors import ZhragError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Answer Chinese questions with local models, with or without retrieval (A0 / A1 / A2).",
)

# The commands, in the order `zhrag --help` lists them.
app.command()(ask.ask)
app.command()(ask.demo)
app.command()(kb.index)
app.command("eval")(evaluate.eval_)
app.command()(ask.search)
app.command("eval-retrieval")(evaluate.eval_retrieval)
app.command()(evaluate.report)
app.command()(evaluate.compare)
app.command("tune-abstention")(evaluate.tune_abstention)
app.command("build-data")(train.build_data)
app.command()(train.train)
app.command("eval-reading")(evaluate.eval_reading)
app.command("eval-tools")(evaluate.eval_tools)
app.command("eval-judge")(evaluate.eval_judge)
app.command("generate-data")(train.generate_data)
app.command()(train.review)
app.command("export-pairs")(train.export_pairs)
app.command("serve-model")(system.serve_model)
app.command()(system.doctor)
app.command(
    "serve-mcp",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)(kb.serve_mcp)


#: Options that take several space-separated values (``--variants a0 a1 a2``).
MULTI_VALUE_OPTIONS = frozenset({"--variants", "--metrics", "--sets", "--dense-weights"})


def _expand_multi_value_options(argv: list[str]) -> list[str]:
    """Rewrite ``--variants a0 a1`` as ``--variants a0 --variants a1`` (click options take one value each)."""
    expanded: list[str] = []
    current: str | None = None
    for token in argv:
        if token in MULTI_VALUE_OPTIONS:
            current = token
            continue
        if current and not token.startswith("-"):
            expanded += [current, token]
            continue
        current = None
        expanded.append(token)
    return expanded


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``zhrag`` console script."""
    try:
        args = sys.argv[1:] if argv is None else argv
        result = app(args=_expand_multi_value_options(args), standalone_mode=False, prog_name="zhrag")
    except ZhragError as error:
        typer.echo(f"error: {error}", err=True)
        return 2
    except typer.Exit as exit_:
        return exit_.exit_code
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 130
    except typer.TyperException as error:  # usage errors (typer vendors click's exceptions)
        error.show()  # type: ignore[attr-defined]  # the vendored click exceptions have show(); mypy sees the base
        return error.exit_code
    except OSError as error:  # a file or folder the checks could not foresee (a full disk, /proc, a race)
        where = f" ({error.filename})" if error.filename else ""
        typer.echo(f"error: {error.strerror or error}{where}", err=True)
        return 2
    return result if isinstance(result, int) else 0

