"""Read knowledge-base documents from the supported source formats.

- ``.jsonl``: one JSON object per line with ``text`` and optional ``id``, ``title``, ``source``;
  other fields become metadata. WikiExtractor ``--json`` output (``id``, ``url``, ``title``,
  ``text``) is read the same way.
- ``.json``: SQuAD-style ``{"data": [{"title", "paragraphs": [{"context", "id"?}]}]}``, one document
  per paragraph.
- ``.txt`` / ``.md``: one document per file, titled with the file stem.
- WikiExtractor output files (``AA/wiki_00``): ``<doc id=".." url=".." title="..">...</doc>`` blocks,
  or JSON lines when extracted with ``--json``.
- A directory is walked (sorted, hidden entries skipped) for all of the above, so a WikiExtractor
  output directory and a folder of mixed files both work.

Documents without an id get a stable one from a hash of their file path (relative to the source
argument) and their text, so re-reading the same source yields the same ids.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zhrag.errors import KnowledgeBaseError
from zhrag.jsonl import iter_jsonl

#: File suffixes read when walking a directory.
SUPPORTED_SUFFIXES = (".jsonl", ".json", ".txt", ".md")

_WIKI_FILE = re.compile(r"wiki_\d+")
_DOC_OPEN = re.compile(r"<doc\s+([^>]*)>")
_DOC_ATTRIBUTE = re.compile(r'(\w+)="([^"]*)"')
_RESERVED_FIELDS = ("id", "title", "text", "source")


@dataclass(frozen=True)
class Document:
    """One knowledge-base document before chunking.

    Attributes:
        id: Stable document id (from the source, else derived from path and text).
        title: Title ("" when the source has none).
        text: Full text.
        source: The record's own ``source`` field when present, else the file it was read from.
        metadata: Any further fields of the record (for example ``url``).
    """

    id: str
    title: str
    text: str
    source: str
    metadata: dict[str, Any] = field(default_factory=dict)


def stable_id(origin: str, text: str) -> str:
    """A short stable document id from where a text comes from and the text itself."""
    return hashlib.sha1(f"{origin}\n{text}".encode()).hexdigest()[:16]


def iter_documents(path: str | Path) -> Iterator[Document]:
    """Yield the documents of a file or directory source.

    Raises:
        KnowledgeBaseError: the source does not exist, a file is malformed (naming file and line),
            a file is not a supported format, or the source yields no documents.
    """
    root = Path(path).expanduser()
    if not root.exists():
        raise KnowledgeBaseError(f"knowledge-base source not found: {root}")
    files = _source_files(root)
    count = 0
    for file in files:
        origin = file.name if file == root else file.relative_to(root).as_posix()
        for document in _read_file(file, origin):
            count += 1
            yield document
    if count == 0:
        raise KnowledgeBaseError(f"empty corpus: {root} yields no documents")


def _source_files(root: Path) -> list[Path]:
    """The readable files of a source: the file itself, or the supported files under a directory."""
    if root.is_file():
        return [root]
    return [
        file
        for file in sorted(root.rglob("*"))
        if file.is_file()
        and not any(part.startswith(".") for part in file.relative_to(root).parts)
        and (file.suffix.lower() in SUPPORTED_SUFFIXES or _WIKI_FILE.fullmatch(file.name))
    ]


def _read_file(file: Path, origin: str) -> Iterator[Document]:
    """Dispatch one file to its reader by suffix, or by content for WikiExtractor files."""
    suffix = file.suffix.lower()
    if suffix == ".jsonl":
        return _read_jsonl(file, origin)
    if suffix == ".json":
        return _read_squad(file, origin)
    if suffix in (".txt", ".md"):
        return _read_text(file, origin)
    head = _read(file)[:4096].lstrip()
    if head.startswith("<doc"):
        return _read_wikiextractor(file, origin)
    if head.startswith("{") or not head:
        return _read_jsonl(file, origin)
    raise KnowledgeBaseError(
        f"{file}: unsupported format (expected .jsonl, .json, .txt, .md or WikiExtractor output)"
    )


def _read(file: Path) -> str:
    """The file's UTF-8 text (a BOM is tolerated)."""
    try:
        return file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise KnowledgeBaseError(f"{file}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except OSError as error:
        raise KnowledgeBaseError(f"{file}: cannot be read ({error.strerror})") from None


def _read_jsonl(file: Path, origin: str) -> Iterator[Document]:
    """Documents of a JSON-lines file; blank lines are skipped, records with blank text too."""
    for where, record in iter_jsonl(file, KnowledgeBaseError):
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise KnowledgeBaseError(f"{where}: expected a JSON object with a string 'text' field")
        text = record["text"].strip()
        if not text:
            continue
        metadata = {key: value for key, value in record.items() if key not in _RESERVED_FIELDS}
        yield Document(
            id=str(record["id"]) if record.get("id") not in (None, "") else stable_id(origin, text),
            title=str(record.get("title") or ""),
            text=text,
            source=str(record.get("source") or origin),
            metadata=metadata,
        )


def _read_squad(file: Path, origin: str) -> Iterator[Document]:
    """One document per paragraph ``context`` of a SQuAD-style file, titled by its article."""
    try:
        squad = json.loads(_read(file))
    except json.JSONDecodeError as error:
        raise KnowledgeBaseError(f"{file}:{error.lineno}: malformed JSON ({error.msg})") from None
    articles = squad.get("data") if isinstance(squad, dict) else None
    if not isinstance(articles, list):
        raise KnowledgeBaseError(f"{file}: not a SQuAD-style file (expected a top-level 'data' list)")
    for article in articles:
        title = str(article.get("title") or "") if isinstance(article, dict) else ""
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            raise KnowledgeBaseError(f"{file}: article {title!r} has no 'paragraphs' list")
        for paragraph in paragraphs:
            context = paragraph.get("context") if isinstance(paragraph, dict) else None
            if not isinstance(context, str):
                raise KnowledgeBaseError(f"{file}: a paragraph of article {title!r} has no string 'context'")
            text = context.strip()
            if text:
                paragraph_id = paragraph.get("id")
                yield Document(
                    id=str(paragraph_id) if paragraph_id else stable_id(origin, text),
                    title=title,
                    text=text,
                    source=origin,
                )


def _read_text(file: Path, origin: str) -> Iterator[Document]:
    """The whole plain-text file as one document titled with the file stem."""
    text = _read(file).strip()
    if text:
        yield Document(id=stable_id(origin, text), title=file.stem, text=text, source=origin)


def _read_wikiextractor(file: Path, origin: str) -> Iterator[Document]:
    """Documents of a WikiExtractor ``<doc ...>...</doc>`` file (the repeated title line is dropped)."""
    attributes: dict[str, str] | None = None
    body: list[str] = []
    opened_at = 0
    for line_number, line in enumerate(_read(file).splitlines(), start=1):
        stripped = line.strip()
        opening = _DOC_OPEN.match(stripped)
        if opening:
            if attributes is not None:
                raise KnowledgeBaseError(
                    f"{file}:{line_number}: <doc> opened before the one at line {opened_at} closed"
                )
            attributes = {key: html.unescape(value) for key, value in _DOC_ATTRIBUTE.findall(opening.group(1))}
            body, opened_at = [], line_number
        elif stripped == "</doc>":
            if attributes is None:
                raise KnowledgeBaseError(f"{file}:{line_number}: </doc> without an opening <doc>")
            document = _wiki_document(attributes, body, origin)
            if document is not None:
                yield document
            attributes = None
        elif attributes is not None:
            body.append(line)
        elif stripped:
            raise KnowledgeBaseError(f"{file}:{line_number}: text outside a <doc> block")
    if attributes is not None:
        raise KnowledgeBaseError(f"{file}:{opened_at}: <doc> is never closed")


def _wiki_document(attributes: dict[str, str], body: list[str], origin: str) -> Document | None:
    """Build one WikiExtractor document, or ``None`` when it has no text beyond its title."""
    title = attributes.get("title", "")
    lines = [line for line in body if line.strip()]
    if lines and lines[0].strip() == title:
        lines = lines[1:]
    text = "\n".join(line.strip() for line in lines)
    if not text:
        return None
    metadata = {key: value for key, value in attributes.items() if key not in _RESERVED_FIELDS}
    return Document(
        id=attributes.get("id") or stable_id(origin, text),
        title=title,
        text=text,
        source=origin,
        metadata=metadata,
    )
