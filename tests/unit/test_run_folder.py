"""The run folder shared by every resumable run: claiming, refusing, backing up, resuming, provenance."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from zhrag import run_folder
from zhrag.errors import ConfigError, DatasetError
from zhrag.run_folder import (
    RESULTS_FILE,
    RUN_FILE,
    claim_run,
    code_version,
    done_ids,
    finish_run,
    process_pending,
    read_records,
    set_aside,
)

SETTINGS = {"format": 1, "model": {"name": "m", "adapter": None}, "limit": 5}
FILES = (RESULTS_FILE, "summary.json")


def run_record(out: Path) -> dict:
    return json.loads((out / RUN_FILE).read_text(encoding="utf-8"))


def test_claim_writes_run_json_and_the_same_settings_resume(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert claim_run(out, SETTINGS, False, kind="reading", files=FILES) is False
    first = run_record(out)
    assert first["settings"] == SETTINGS and len(first["sessions"]) == 1
    assert not (out / f"{RUN_FILE}.partial").exists()
    (out / RESULTS_FILE).write_text('{"id": "a"}\n', encoding="utf-8")
    assert claim_run(out, dict(SETTINGS), False, kind="reading", files=FILES) is True
    again = run_record(out)
    assert again["created"] == first["created"] and len(again["sessions"]) == 2
    assert (out / RESULTS_FILE).read_text(encoding="utf-8") == '{"id": "a"}\n'


def test_a_different_run_is_refused_naming_the_settings(tmp_path: Path) -> None:
    out = tmp_path / "run"
    claim_run(out, SETTINGS, False, kind="judge", files=FILES)
    changed = {**SETTINGS, "model": {"name": "m2", "adapter": None}, "limit": 6}
    with pytest.raises(ConfigError, match=r"holds a judge run with other settings \(differs in: limit, model\.name\)"):
        claim_run(out, changed, False, kind="judge", files=FILES)
    assert run_record(out)["settings"] == SETTINGS  # nothing written


def test_results_without_run_json_or_an_unreadable_run_json_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / RESULTS_FILE).write_text("", encoding="utf-8")
    with pytest.raises(ConfigError, match="holds results.jsonl without run.json"):
        claim_run(tmp_path / "a", SETTINGS, False, kind="reading", files=FILES)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / RUN_FILE).write_text("{cut", encoding="utf-8")
    with pytest.raises(ConfigError, match="unreadable run.json"):
        claim_run(tmp_path / "b", SETTINGS, False, kind="reading", files=FILES)


def test_force_moves_the_old_run_aside(tmp_path: Path) -> None:
    out = tmp_path / "run"
    claim_run(out, SETTINGS, False, kind="reading", files=FILES)
    (out / RESULTS_FILE).write_text('{"id": "old"}\n', encoding="utf-8")
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    changed = {**SETTINGS, "limit": 9}
    assert claim_run(out, changed, True, kind="reading", files=FILES) is False
    [backup] = out.glob("replaced-*")
    assert (backup / RESULTS_FILE).read_text(encoding="utf-8") == '{"id": "old"}\n'
    assert json.loads((backup / RUN_FILE).read_text(encoding="utf-8"))["settings"] == SETTINGS
    assert run_record(out)["settings"] == changed and not (out / RESULTS_FILE).exists()
    assert (out / "notes.txt").read_text(encoding="utf-8") == "mine"  # not a file of the run: left alone


def test_an_upgrade_fills_in_settings_added_since(tmp_path: Path) -> None:
    out = tmp_path / "run"
    claim_run(out, SETTINGS, False, kind="reading", files=FILES)
    newer = {**SETTINGS, "added": "default"}

    def upgrade(recorded: dict) -> dict:
        return {"added": "default", **recorded}

    assert claim_run(out, newer, False, kind="reading", files=FILES, upgrade=upgrade) is True
    with pytest.raises(ConfigError, match=r"differs in: added"):
        claim_run(out, {**newer, "added": "other"}, False, kind="reading", files=FILES, upgrade=upgrade)


def test_resume_skips_done_ids(tmp_path: Path) -> None:
    out = tmp_path / "run"
    claim_run(out, SETTINGS, False, kind="reading", files=FILES)
    items = [SimpleNamespace(id=name) for name in ("a", "b", "c", "d")]
    seen: list[str] = []

    def run_batch(batch: list) -> list[str]:
        seen.extend(item.id for item in batch)
        if "c" in [item.id for item in batch]:
            raise RuntimeError("killed")
        return [item.id.upper() for item in batch]

    def to_record(item, output: str, ms: float) -> dict:
        return {"id": item.id, "output": output}

    with pytest.raises(RuntimeError, match="killed"):
        process_pending(items, out / RESULTS_FILE, run_batch, to_record, batch_size=1, desc="t", progress=False)
    assert done_ids(out / RESULTS_FILE) == {"a", "b"}
    seen.clear()
    records = process_pending(
        items, out / RESULTS_FILE, lambda batch: [i.id.upper() for i in batch], to_record,
        batch_size=2, desc="t", progress=False,
    )
    assert [record["id"] for record in records] == ["a", "b", "c", "d"]
    assert [record["output"] for record in records] == ["A", "B", "C", "D"]


def test_a_truncated_last_line_is_cut_and_redone(tmp_path: Path) -> None:
    path = tmp_path / RESULTS_FILE
    path.write_bytes(b'{"id": "a"}\n{"id": "b"}\n{"id": "c", "ans')  # killed while writing the third line
    assert done_ids(path) == {"a", "b"}
    assert path.read_bytes() == b'{"id": "a"}\n{"id": "b"}\n'


def test_a_damaged_line_or_a_repeated_key_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / RESULTS_FILE
    path.write_bytes(b'{"id": "a"}\n{not json\n{"id": "b"}\n')
    with pytest.raises(DatasetError, match=r"results.jsonl:2: not a result record"):
        done_ids(path)
    path.write_bytes(b'{"id": "a", "v": "x"}\n{"id": "a", "v": "y"}\n{"id": "a", "v": "x"}\n')
    pair = lambda record: (record["id"], record["v"])  # noqa: E731
    assert read_records(path, key=pair)[1] == {"id": "a", "v": "y"}
    with pytest.raises(DatasetError, match=r"results.jsonl:3: a second record for \('a', 'x'\)"):
        done_ids(path, key=pair, unique=True)
    path.write_bytes(b'{"id": 7}\n')
    with pytest.raises(DatasetError, match="not a result record"):
        read_records(path)


def test_commit_and_load_are_recorded_at_start_and_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_folder, "code_version", lambda: {"commit": "abc123", "dirty": False})
    loads = iter([[0.5, 0.25, 0.125], [2.0, 1.0, 0.5]])
    monkeypatch.setattr(run_folder, "load_average", lambda: next(loads))
    out = tmp_path / "run"
    claim_run(out, SETTINGS, False, kind="reading", files=FILES)
    [session] = run_record(out)["sessions"]
    assert session["code"] == {"commit": "abc123", "dirty": False}
    assert session["load_average_at_start"] == [0.5, 0.25, 0.125] and "finished" not in session
    finished = finish_run(out)
    [session] = run_record(out)["sessions"]
    assert session == finished and session["load_average_at_end"] == [2.0, 1.0, 0.5]
    assert session["started"] <= session["finished"]


def test_load_average_is_three_numbers() -> None:
    load = run_folder.load_average()
    assert load is None or (len(load) == 3 and all(isinstance(value, float) for value in load))


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_code_version_reads_the_repository_the_package_lives_in(tmp_path: Path) -> None:
    package = tmp_path / "repo" / "pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("", encoding="utf-8")
    assert code_version(package) == {"commit": None, "dirty": None}  # no git repository

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(package.parent), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                              capture_output=True, text=True, check=True)
        return done.stdout.strip()

    git("init", "-q")
    assert code_version(package) == {"commit": None, "dirty": None}  # the package is not tracked there
    git("add", ".")
    git("commit", "-q", "-m", "first")
    assert code_version(package) == {"commit": git("rev-parse", "HEAD"), "dirty": False}
    (package / "__init__.py").write_text("x = 1\n", encoding="utf-8")
    assert code_version(package)["dirty"] is True


def test_set_aside_renames_a_single_file_run(tmp_path: Path) -> None:
    path = tmp_path / "gen.jsonl"
    assert set_aside(path) is None
    path.write_text("old\n", encoding="utf-8")
    moved = set_aside(path)
    assert moved is not None and moved.name.startswith("gen.replaced-") and moved.name.endswith(".jsonl")
    assert moved.read_text(encoding="utf-8") == "old\n" and not path.exists()
