"""The files of a resumable evaluation run over examples: ``run.json`` (its settings) and ``results.jsonl``.

Shared by ``zhrag eval-reading`` and ``zhrag eval-judge``: a run folder is claimed for one set of settings
(a rerun with the same settings resumes, other settings are refused unless forced), finished examples are
appended one JSON line each, and a line cut by a kill is dropped on the next start.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from zhrag.errors import ConfigError, TrainingDataError
from zhrag.jsonl import append_jsonl, drop_partial_last_line, writable_dir

RUN_FILE = "run.json"


def claim_run(out: Path, run_settings: Mapping[str, Any], force: bool, *, kind: str, files: Sequence[str]) -> None:
    """Accept ``out`` for this run: empty, the same run (resume), or another run replaced with ``force``.

    ``files`` are the run's output files (the first one the results), removed when the run starts afresh.
    """
    writable_dir(out, f"{kind} run folder")
    run_file = out / RUN_FILE
    current = json.loads(json.dumps(run_settings))
    if run_file.is_file():
        try:
            recorded = json.loads(run_file.read_text(encoding="utf-8"))["settings"]
        except (ValueError, KeyError, TypeError):
            recorded = None
        if recorded == current:
            return
        if not force:
            raise ConfigError(f"{out} holds a {kind} run with other settings; use another --out, or --force")
    elif (out / files[0]).exists() and not force:
        raise ConfigError(f"{out} holds {files[0]} without {RUN_FILE}; use another --out, or --force")
    out.mkdir(parents=True, exist_ok=True)
    for name in files:
        (out / name).unlink(missing_ok=True)
    record = {"settings": current, "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    run_file.write_text(json.dumps(record, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def done_ids(path: Path) -> set[str]:
    """Ids already in a results file, after cutting off an incomplete last line left by a kill."""
    if not path.exists():
        return set()
    drop_partial_last_line(path)
    return {record["id"] for record in read_records(path)}


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a results file (each a JSON object with a string ``id``).

    Raises:
        TrainingDataError: a line that is not such a record (the file is damaged).
    """
    records = []
    for number, line in enumerate(path.read_bytes().split(b"\n"), start=1):
        if line.strip():
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if not isinstance(record, dict) or not isinstance(record.get("id"), str):
                raise TrainingDataError(f"{path}:{number}: not a result record; the results file is damaged")
            records.append(record)
    return records


def process_pending(
    items: Sequence[Any],
    results_path: Path,
    run_batch: Callable[[list[Any]], Sequence[Any]],
    to_record: Callable[[Any, Any, float], dict[str, Any]],
    *,
    batch_size: int,
    desc: str,
    progress: bool,
) -> list[dict[str, Any]]:
    """Run the ``items`` (each with an ``id``) not yet in ``results_path``, ``batch_size`` at a time, and append
    ``to_record(item, output, ms per item)`` for each as it finishes; returns the records of ``items``, in file order."""
    from tqdm.auto import tqdm  # noqa: PLC0415

    done = done_ids(results_path)
    pending = [item for item in items if item.id not in done]
    with (
        results_path.open("ab") as sink,
        tqdm(total=len(items), initial=len(items) - len(pending), desc=desc, unit="example", disable=not progress) as bar,
    ):
        for start in range(0, len(pending), batch_size):
            batch = pending[start : start + batch_size]
            started = time.perf_counter()
            outputs = run_batch(batch)
            ms = (time.perf_counter() - started) * 1000.0 / len(batch)
            for item, output in zip(batch, outputs, strict=True):
                append_jsonl(sink, [to_record(item, output, ms)])
            bar.update(len(batch))
    wanted = {item.id for item in items}
    return [record for record in read_records(results_path) if record["id"] in wanted]
