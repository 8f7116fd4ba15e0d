"""JSON-lines files: reading with errors that name the file and line, durable appends."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from zhrag.errors import ZhragError


def iter_jsonl(path: Path, error: type[ZhragError] = ZhragError) -> Iterator[tuple[str, Any]]:
    """Yield ``("<path>:<line>", record)`` for every non-blank line of a UTF-8 JSON-lines file.

    Raises ``error`` (a :class:`ZhragError` subclass) naming the file, and the line where one is at
    fault, for an unreadable file, text that is not UTF-8 (a BOM is tolerated) or a line that is not
    valid JSON.
    """
    try:
        with Path(path).open(encoding="utf-8-sig") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                where = f"{path}:{number}"
                try:
                    yield where, json.loads(line)
                except json.JSONDecodeError as exc:
                    raise error(f"{where}: malformed JSON line ({exc.msg})") from None
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise error(f"{path}: cannot be read ({exc.strerror})") from None


def append_jsonl(sink: BinaryIO, records: Sequence[Mapping[str, Any]]) -> None:
    """Append ``records`` as JSON lines in one write to a binary file and force them to disk (fsync).

    One write per call keeps a group of lines together: a crash leaves at most a partial last line, which
    the resuming readers detect.
    """
    sink.write("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records).encode("utf-8"))
    sink.flush()
    os.fsync(sink.fileno())


def drop_partial_last_line(path: Path) -> bytes:
    """Cut an incomplete last line (a write interrupted by a kill) off ``path`` durably; return the complete lines.

    An append-only JSON-lines file written with :func:`append_jsonl` can only lose the end of its last line, so
    cutting after the last newline restores a file of whole records.
    """
    content = Path(path).read_bytes()
    complete = content.rfind(b"\n") + 1
    if complete < len(content):
        with Path(path).open("r+b") as handle:
            handle.truncate(complete)
            os.fsync(handle.fileno())
    return content[:complete]


def writable_dir(path: str | Path, what: str = "output folder", *, create: bool = True) -> Path:
    """``path`` as a folder that can be written to; created if needed unless ``create`` is false.

    Called before any model loads, so that a bad ``--out`` is a one-line error at once rather than a traceback
    after minutes of work. With ``create=False`` nothing is written: a missing folder passes when its nearest
    existing parent is a writable folder (the caller creates it once the run really starts).

    Raises:
        ZhragError: ``path`` is a file, or the folder cannot be created or written (naming the path and why).
    """
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ZhragError(f"{what} {folder} is a file, not a folder")
    if not create and not folder.exists():
        parent = folder.absolute().parent
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir():
            raise ZhragError(f"cannot create the {what} {folder}: {parent} is a file, not a folder")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ZhragError(f"cannot create the {what} {folder}: {parent} is not writable")
        return folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as error:
        raise ZhragError(f"cannot write the {what} {folder}: {error.strerror or error}") from None
    return folder


def stat_digest(files: Iterable[Path]) -> str:
    """SHA-256 (hex) of the files' paths (as given), sizes and modification times, in the order given: a cheap key
    that changes when a file is replaced or edited. Files that cannot be stat'ed are left out (reading them
    reports the error)."""
    digest = hashlib.sha256()
    for file in files:
        try:
            stat = file.stat()
        except OSError:
            continue
        digest.update(f"{file}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()
