"""CLI input errors that need no model, no Qdrant: one line on stderr, exit code 2, no traceback."""

from __future__ import annotations

import pytest

from zhrag.cli import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["ask", "   "], "question is empty"),
        (["ask", ""], "question is empty"),
        (["ask", "--variant", "a9", "问题"], "unknown variant 'a9'"),
        (["ask", "--variant", "a1", "--top-k", "0", "问题"], "top_k must be between 1 and 50"),
        (["ask", "--variant", "a0", "--device", "tpu", "问题"], "unknown device 'tpu'"),
    ],
)
def test_bad_ask_input_gives_one_line_error(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_unknown_command_is_a_usage_error(capsys):
    assert main(["frobnicate"]) == 2
    assert "No such command" in capsys.readouterr().err
