"""CLI input errors that need no model, no Qdrant: one line on stderr, exit code 2, no traceback."""

from __future__ import annotations

import pytest

from zhrag.cli import main
from zhrag.cli.options import StoreOptions, with_option_groups
from zhrag.jsonl import writable_dir

#: Stands for a fresh output folder of the test (a fixed path such as /tmp/x may be a file on a shared machine).
OUT = "<out>"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["ask", "   "], "question is empty"),
        (["ask", ""], "question is empty"),
        (["ask", "--variant", "a9", "问题"], "unknown variant 'a9'"),
        (["ask", "--variant", "a1", "--top-k", "0", "问题"], "top_k must be between 1 and 50"),
        (["ask", "--variant", "a0", "--device", "tpu", "问题"], "unknown device 'tpu'"),
        (["ask", "--variant", "a2", "--judge-threshold", "2", "问题"], "judge_threshold must be between 0 and 1"),
        (["ask", "--variant", "a2", "--a2-fallback", "guess", "问题"], "unknown a2_fallback 'guess'"),
        (["ask", "--variant", "a0", "--engine", "vllm", "问题"], "unknown engine 'vllm'"),
        (["ask", "--variant", "a0", "--max-new-tokens", "100000", "问题"], "max_new_tokens must be between 1 and 512"),
        (["eval", "--data", "/nonexistent/q.jsonl", "--out", OUT], "question file not found: /nonexistent/q.jsonl"),
        (["eval-retrieval", "--dense-weights", "0.5,-1", "--out", OUT], "--dense-weights must be >= 0, got -1"),
        (["eval-retrieval", "--dense-weights", "0.5,x", "--out", OUT], "--dense-weights takes numbers, got 'x'"),
        (["eval-retrieval", "--sets", "rc-test", "--out", OUT], "unknown retrieval set 'rc-test'"),
        (["index", "--dense", "--sparse-only"], "--dense embeds an indexed collection"),
        (["compare", "/nonexistent/run", "--out", OUT], "run directory not found: /nonexistent/run"),
        (["eval-tools", "--data", "/nonexistent/d", "--out", OUT, "--limit", "0"], "limit must be >= 1, got 0"),
        (["eval-tools", "--data", "/nonexistent/d", "--out", OUT], "evaluation data not found: /nonexistent/d"),
        (["eval-tools", "--data", "/nonexistent/d", "--untrained-by", "/nonexistent/a", "--out", OUT],
         "/nonexistent/a has no training card"),
    ],
)
def test_bad_ask_input_gives_one_line_error(argv, message, capsys, tmp_path):
    argv = [str(tmp_path / "out") if arg == OUT else arg for arg in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_unknown_command_is_a_usage_error(capsys):
    assert main(["frobnicate"]) == 2
    assert "No such command" in capsys.readouterr().err


def test_option_groups_are_declared_once_and_shared(capsys):
    from typer.main import get_command

    from zhrag.cli import app

    command = get_command(app)
    shared = {"--model", "--engine", "--top-k", "--judge-threshold", "--collection", "--qdrant-path", "--embedder"}
    for name in ("ask", "eval", "demo"):
        flags = [flag for parameter in command.commands[name].params for flag in parameter.opts]
        assert shared <= set(flags), name
        assert len(flags) == len(set(flags)), name


def test_colliding_option_names_are_refused():
    def command(store: StoreOptions, embedder: str = "x") -> None: ...

    with pytest.raises(TypeError, match="option names collide: \\['embedder'\\]"):
        with_option_groups(command)


@pytest.mark.parametrize("command", [["eval", "--variants", "a0", "--limit", "1"], ["eval-judge", "--data", "x"]])
def test_an_output_path_that_is_a_file_is_one_line_before_any_work(command, tmp_path, capsys):
    target = tmp_path / "afile"
    target.write_text("", encoding="utf-8")
    assert main([*command, "--out", str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"{target} is a file, not a folder") and len(err.splitlines()) == 1


def test_an_output_folder_under_a_file_is_refused_without_creating_anything(tmp_path, capsys):
    blocker = tmp_path / "afile"
    blocker.write_text("", encoding="utf-8")
    assert main(["eval", "--variants", "a0", "--limit", "1", "--out", str(blocker / "run" / "deeper")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"{blocker} is a file, not a folder") and len(err.splitlines()) == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == ["afile"]


def test_checking_a_new_output_folder_creates_nothing(tmp_path):
    target = tmp_path / "new" / "run"
    assert writable_dir(target, create=False) == target
    assert not (tmp_path / "new").exists()
    assert writable_dir(target) == target and target.is_dir()


def test_an_os_error_the_checks_could_not_foresee_is_one_line(monkeypatch, capsys):
    """e.g. `eval --out /proc/x` as root: the folder looks creatable until mkdir fails."""
    from zhrag import cli

    def fails(*args, **kwargs):
        raise FileNotFoundError(2, "No such file or directory", "/proc/forbidden")

    monkeypatch.setattr(cli, "_expand_multi_value_options", fails)
    assert cli.main(["ask", "长江有多长？"]) == 2
    assert capsys.readouterr().err == "error: No such file or directory (/proc/forbidden)\n"


def test_a_lock_file_that_is_not_text_is_one_line(tmp_path, capsys):
    from zhrag import cli

    lock = tmp_path / "garbage.lock"
    lock.write_bytes(b"\xff\xfe\x00binary")
    assert cli.main(["doctor", "--lock", str(lock)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: lock file {lock} is not UTF-8 text"
