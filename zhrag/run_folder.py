"""The run folder: one module for every resumable run (``zhrag eval``, ``eval-reading``, ``eval-judge``, ``eval-tools``,
``eval-retrieval``) and the run record of ``zhrag train``.

A run folder holds ``run.json`` (:data:`RUN_FILE`) and the run's results, usually ``results.jsonl``
(:data:`RESULTS_FILE`, one JSON record per finished item). The rules, the same for every run:

- **Claiming** (:func:`claim_run`, or :func:`check_run` then :func:`start_run` when the folder must not be touched
  before the models load): an empty folder starts a run; a folder whose ``run.json`` holds the same ``settings``
  resumes it; a folder holding a run with other settings, an unreadable ``run.json``, or results without
  ``run.json`` is refused with a one-line :class:`~zhrag.errors.ConfigError` naming the settings that differ,
  unless ``force``. With ``force`` the old run's files are **moved** (never deleted) into
  ``replaced-<UTC time>/`` inside the folder, and a fresh run starts.
- ``run.json`` is always written whole (temporary file, fsync, rename), so a kill leaves the old or the new one.
- **Resuming**: :func:`done_ids` gives the keys of the records already written, after cutting off an incomplete last
  line left by a kill (:func:`zhrag.jsonl.drop_partial_last_line`); records are appended one write at a time with
  flush + fsync (:func:`zhrag.jsonl.append_jsonl`), so a kill loses at most the items in flight.
- **Provenance**: every start or resume of the run adds a *session* to ``run.json``: its start time, the git commit
  of the code (:func:`code_version`: ``git rev-parse HEAD`` of the repository the ``zhrag`` package lives in and
  whether tracked files differ from it; ``None`` outside a git checkout) and the machine's load average at start
  (:func:`load_average`); :func:`finish_run` adds the end time and the load average at the end. A session without
  an end was interrupted.

``run.json``::

    {"settings": {...}, "created": "<UTC time>",
     "sessions": [{"started", "code": {"commit", "dirty"}, "load_average_at_start": [1, 5, 15 min],
                   "finished", "load_average_at_end"}, ...]}

Only ``settings`` decides whether two runs are the same run. A leaf module: it imports only
:mod:`zhrag.errors` and :mod:`zhrag.jsonl`, so every layer may use it.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from zhrag.errors import ConfigError, DatasetError, ZhragError
from zhrag.jsonl import append_jsonl, drop_partial_last_line, writable_dir

RUN_FILE = "run.json"
RESULTS_FILE = "results.jsonl"
#: Prefix of the folder a forced run moves the replaced run's files into.
BACKUP_PREFIX = "replaced-"

#: Where the ``zhrag`` package lives (its git repository is the code a run records).
_PACKAGE_DIR = Path(__file__).resolve().parent


def utc_now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def code_version(package_dir: Path = _PACKAGE_DIR) -> dict[str, Any]:
    """``{"commit", "dirty"}`` of the code: ``git rev-parse HEAD`` of the repository holding ``package_dir`` and
    whether tracked files differ from that commit; both ``None`` when git is missing or the package is not a
    tracked part of a git checkout (e.g. an installed wheel)."""
    unknown: dict[str, Any] = {"commit": None, "dirty": None}

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(package_dir), *args], capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    if not git("ls-files", "--", "__init__.py"):  # not tracked: a package inside some other repository's folder
        return unknown
    commit = git("rev-parse", "HEAD")
    if not commit:
        return unknown
    changes = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if changes is None else bool(changes)}


def load_average() -> list[float] | None:
    """The machine's load average over 1, 5 and 15 minutes (``os.getloadavg``), or ``None`` where there is none."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def write_json_atomic(path: Path, value: Any) -> Path:
    """Write ``value`` as indented JSON to ``path`` whole: a temporary file beside it, fsync, then rename."""
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", encoding="utf-8") as handle:
        handle.write(json.dumps(value, ensure_ascii=False, indent=2) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    partial.replace(path)
    return path


def settings_differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted names (``key.sub.leaf``) of the settings that differ between two settings objects, sorted."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        found: list[str] = []
        for key in sorted(set(old) | set(new)):
            found += settings_differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return found
    return [] if old == new else [prefix.rstrip(".") or "settings"]


def read_run(out: Path) -> dict[str, Any] | None:
    """The ``run.json`` record of ``out``, or ``None`` when there is none.

    Raises:
        ConfigError: ``run.json`` exists but is unreadable or not a JSON object.
    """
    path = Path(out) / RUN_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as problem:
        raise ConfigError(f"{path}: unreadable ({problem})") from None
    if not isinstance(record, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return record


def check_run(
    out: Path,
    settings: Mapping[str, Any],
    force: bool,
    *,
    kind: str,
    results: str = RESULTS_FILE,
    upgrade: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> bool:
    """Whether ``out`` holds this very run (resume: True) or none (False), writing nothing.

    ``results`` names the run's results file (results without ``run.json`` are a run of unknown settings).
    ``upgrade`` maps recorded settings to the current layout before comparing (e.g. fills in settings added
    since, at the value older runs had).

    Raises:
        ConfigError: ``out`` holds another run, an unreadable ``run.json`` or results without ``run.json``, and not
            ``force``. The message names the settings that differ.
    """
    out = Path(out)
    current = json.loads(json.dumps(settings))  # as it reads back from JSON (tuples become lists)
    run_file = out / RUN_FILE
    if run_file.is_file():
        try:
            recorded = read_run(out)["settings"]  # type: ignore[index]
        except (ConfigError, KeyError):
            recorded = None
        if isinstance(recorded, dict):
            if upgrade is not None:
                recorded = upgrade(recorded)
            if recorded == current:
                return True
            changed = settings_differences(recorded, current)
            listed = ", ".join(changed[:6]) + (f" and {len(changed) - 6} more" if len(changed) > 6 else "")
            article = "an" if kind[:1] in "aeiou" else "a"
            problem = f"{out} holds {article} {kind} run with other settings (differs in: {listed})"
        else:
            problem = f"{out} holds an unreadable {RUN_FILE} (settings unknown)"
    elif (out / results).exists():
        problem = f"{out} holds {results} without {RUN_FILE} (settings unknown)"
    else:
        return False
    if not force:
        raise ConfigError(f"{problem}; use another --out, or --force to start afresh (the old files are kept in "
                          f"{BACKUP_PREFIX}<time>/)")
    return False


def _stamp() -> str:
    """The UTC time to the microsecond, for the names of replaced files."""
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S%fZ}"


def back_up(out: Path, names: Sequence[str]) -> Path | None:
    """Move the files or folders ``names`` of ``out`` that exist into a new ``out/replaced-<UTC time>/``; return
    that folder, or ``None`` when there was nothing to move."""
    present = [name for name in dict.fromkeys(names) if (out / name).exists() or (out / name).is_symlink()]
    if not present:
        return None
    backup = out / f"{BACKUP_PREFIX}{_stamp()}"
    backup.mkdir()
    for name in present:
        (out / name).rename(backup / name)
    return backup


def set_aside(path: Path, suffix: str | None = None) -> Path | None:
    """For a run kept in a single file rather than a folder: rename ``path`` (when it exists) to
    ``<stem>.replaced-<UTC time><suffix>`` beside it (``suffix``: the file's own by default); return the new path."""
    path = Path(path)
    if not path.exists():
        return None
    suffix = path.suffix if suffix is None else suffix
    stem = path.name.removesuffix(suffix) if suffix else path.name
    target = path.with_name(f"{stem}.{BACKUP_PREFIX}{_stamp()}{suffix}")
    path.rename(target)
    return target


def start_run(
    out: Path, settings: Mapping[str, Any], files: Sequence[str], *, resume: bool, what: str = "run folder"
) -> Path:
    """Begin a session of the run in ``out`` (see :func:`check_run`); returns ``run.json``.

    Resuming, a new session is added to ``run.json``. Otherwise the files ``files`` of a previous run (and its
    ``run.json``) are moved into ``replaced-<time>/`` and a fresh ``run.json`` is written.

    Raises:
        ZhragError: ``out`` cannot be created or written.
    """
    out = writable_dir(out, what)
    session = {"started": utc_now(), "code": code_version(), "load_average_at_start": load_average()}
    record = read_run(out) if resume else None
    if record is None:
        back_up(out, [RUN_FILE, *files])
        record = {"settings": json.loads(json.dumps(settings)), "created": session["started"], "sessions": []}
    record["sessions"] = [*record.get("sessions", []), session]
    return write_json_atomic(out / RUN_FILE, record)


def claim_run(
    out: str | Path,
    settings: Mapping[str, Any],
    force: bool,
    *,
    kind: str,
    files: Sequence[str],
    upgrade: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> bool:
    """:func:`check_run` then :func:`start_run`: claim ``out`` for the run of ``settings``; True when it resumes.

    ``files`` are the run's output files, the first one its results.
    """
    out = Path(out)
    writable_dir(out, f"{kind} run folder", create=False)
    resume = check_run(out, settings, force, kind=kind, results=files[0], upgrade=upgrade)
    start_run(out, settings, files, resume=resume, what=f"{kind} run folder")
    return resume


def finish_run(out: str | Path) -> dict[str, Any] | None:
    """Record the end of the current session in ``run.json`` (its time and the load average then); returns that
    session (``None`` without a ``run.json`` holding one)."""
    record = read_run(Path(out))
    if record is None or not record.get("sessions"):
        return None
    session = record["sessions"][-1]
    session.update(finished=utc_now(), load_average_at_end=load_average())
    write_json_atomic(Path(out) / RUN_FILE, record)
    return session


# ---------------------------------------------------------------------------------------------- results


def record_id(record: Mapping[str, Any]) -> str:
    """The key of a result record: its string ``id``."""
    value = record["id"]
    if not isinstance(value, str):
        raise TypeError("id is not a string")
    return value


def read_records(
    path: Path,
    *,
    key: Callable[[Mapping[str, Any]], Hashable] = record_id,
    error: type[ZhragError] = DatasetError,
) -> list[dict[str, Any]]:
    """The records of a results file: JSON objects for which ``key`` works, in file order.

    Raises:
        ZhragError: (``error``) a line that is not such a record (the file is damaged), named by file and line.
    """
    return [record for _, record in _numbered_records(Path(path), key, error)]


def done_ids(
    path: Path,
    *,
    key: Callable[[Mapping[str, Any]], Hashable] = record_id,
    unique: bool = False,
    error: type[ZhragError] = DatasetError,
) -> set[Any]:
    """The keys of the records already in a results file, after cutting off an incomplete last line left by a kill.

    Raises:
        ZhragError: (``error``) a damaged line, or with ``unique`` a key that repeats.
    """
    path = Path(path)
    if not path.exists():
        return set()
    drop_partial_last_line(path)
    done: set[Any] = set()
    for number, record in _numbered_records(path, key, error):
        found = key(record)
        if unique and found in done:
            raise error(f"{path}:{number}: a second record for {found!r}; the results file is damaged")
        done.add(found)
    return done


def _numbered_records(
    path: Path, key: Callable[[Mapping[str, Any]], Hashable], error: type[ZhragError]
) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, line in enumerate(path.read_bytes().split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise TypeError("not an object")
            key(record)
        except (ValueError, KeyError, TypeError):
            raise error(f"{path}:{number}: not a result record; the results file is damaged") from None
        yield number, record


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
    ``to_record(item, output, ms per item)`` for each as it finishes; returns the records of ``items``, in file order.
    """
    from tqdm.auto import tqdm

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
