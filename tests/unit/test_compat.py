"""The installation checks: the transformers / peft pair and the installed versions against a lock file."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest

from zhrag.cli import main
from zhrag.compat import lock_mismatches, lora_stack_problem, read_lock
from zhrag.errors import ConfigError


def test_the_installed_pair_is_compatible() -> None:
    assert lora_stack_problem() is None


def test_a_peft_older_than_transformers_needs_is_one_line() -> None:
    peft, transformers = metadata.version("peft"), metadata.version("transformers")
    problem = lora_stack_problem(min_peft="99.0.0")
    assert problem == (
        f"transformers {transformers} needs peft >= 99.0.0, but peft {peft} is installed; "
        'install the tested pair: pip install -c requirements.lock -e ".[test]"'
    )


def test_lock_comparison(tmp_path: Path) -> None:
    lock = tmp_path / "requirements.lock"
    installed = metadata.version("packaging")
    lock.write_text(
        "# generated\npackaging==" + installed + "\n    # via zhrag\nJinja2==0.0.1\nno-such-dist==1.0\n", encoding="utf-8"
    )
    assert read_lock(lock) == {"packaging": installed, "jinja2": "0.0.1", "no-such-dist": "1.0"}
    assert lock_mismatches(lock) == [
        f"jinja2: locked 0.0.1, installed {metadata.version('jinja2')}",
        "no-such-dist: locked 1.0, not installed",
    ]


def test_an_empty_or_missing_lock_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "empty.lock").write_text("# nothing\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="pins no package"):
        read_lock(tmp_path / "empty.lock")
    with pytest.raises(ConfigError, match="cannot read lock file"):
        read_lock(tmp_path / "missing.lock")


def test_doctor_reports_mismatches_in_one_line_each(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lock = tmp_path / "requirements.lock"
    lock.write_text("packaging==0.0.1\n", encoding="utf-8")
    assert main(["doctor", "--lock", str(lock)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == f"problem: packaging: locked 0.0.1, installed {metadata.version('packaging')} (lock file {lock})"
    assert err[-1].startswith("error: 1 problem(s) with the installation")


def test_the_clones_lock_matches_this_installation() -> None:
    lock = Path(__file__).resolve().parents[2] / "requirements.lock"
    assert lock.is_file()
    assert lock_mismatches(lock) == []
