"""Reading JSON-lines files with errors that name the file and line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
