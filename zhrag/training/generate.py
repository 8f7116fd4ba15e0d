"""Self-generated reading-comprehension pairs: the LLM writes question/answer pairs from KB passages, then each is checked.

``generate_dataset`` takes knowledge-base chunks (seeded order, ``limit`` of them), asks the model for
``per_passage`` pairs per chunk (:func:`zhrag.prompts.generate.build_generate_prompt`, completion or chat form)
and checks every pair, cheapest test first; the first failed test is the pair's ``reason``:

- ``unparsable``: the generation held no ``问题：`` / ``答案：`` pair (one record per such passage);
- ``answer_too_long``: more than ``max_answer_chars`` normalised characters (the graph wants short answers);
- ``answer_not_in_passage``: the answer is not stated verbatim in the passage after normalisation
  (NFKC, lower case, no spaces or punctuation);
- ``answer_in_question``: the question already contains the answer;
- ``question_copies_passage``: question and passage share a span of ``copy_span_chars`` normalised characters
  (12 by default: 17.5 % of the human-written questions of the shared reading-comprehension set copy that much);
- ``llm_check_no`` / ``llm_check_unclear`` (with ``llm_check``): the model, asked whether the passage supports
  the answer, said 否 or nothing readable;
- ``duplicate_question``: the same normalised question as an earlier accepted pair.

Every pair is kept, as one JSON line::

    {"id": "<chunk id>/<n>", "passage_id": <KB document id>, "chunk_id", "title", "passage" (what the prompt showed),
     "question", "answer", "status": "accepted" | "rejected", "reason": null | <reason>, "lcs": <longest shared
     span>, "llm_check": <raw verdict> | null, "generation": <raw completion>, "passage_records": <lines of this chunk>}

The lines of one chunk are written with one write and fsync'd; re-running skips the chunks already in the file.
A kill can only leave the last chunk's lines incomplete (``passage_records`` tells), and those are cut off and
redone. ``<out>.meta.json`` records the model, the prompt templates (text and SHA-256), the settings, the code's git
commit and the load average at start and end (:mod:`zhrag.run_folder`); a run with another model, prompts or settings
into the same file is refused unless ``force``, which starts afresh and moves the old file, its sidecar and its review
decisions aside (``<stem>.replaced-<time>.jsonl``; the decisions too, since the new pairs reuse their ids).
Accepted pairs (after review decisions, if any) become :class:`~zhrag.training.examples.RCPair` for
:func:`~zhrag.training.examples.build_rc_examples` through :func:`generated_rc_pairs`.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tqdm import tqdm

from zhrag import settings as zhrag_settings
from zhrag.errors import ConfigError, TrainingDataError
from zhrag.jsonl import append_jsonl, iter_jsonl
from zhrag.kb.passage import Passage
from zhrag.kb.sources import iter_documents
from zhrag.models import LLM
from zhrag.prompts import normalize_text, parse_judgement
from zhrag.prompts.answer import ANSWER_PASSAGE_CHARS
from zhrag.prompts.common import Prompt, format_passage
from zhrag.prompts.generate import (
    CHECK_MAX_NEW_TOKENS,
    GENERATE_STOP,
    GENERATE_TOKENS_PER_PAIR,
    build_check_prompt,
    build_generate_prompt,
    parse_pairs,
)
from zhrag.prompts.judge import JUDGE_PASSAGE_CHARS
from zhrag.rc_pairs import RCPair
from zhrag.run_folder import code_version, load_average, set_aside, write_json_atomic
from zhrag.training.examples import document_passages
from zhrag.training.review import (
    apply_decisions,
    default_decisions_path,
    read_decisions,
)

#: Characters of a passage shown to the generator and checked against: what the answer and judge prompts show.
PASSAGE_CHARS = min(ANSWER_PASSAGE_CHARS, JUDGE_PASSAGE_CHARS)
#: Suffix of the sidecar file that records model, prompts and settings.
META_SUFFIX = ".meta.json"
#: Version of the record / sidecar layout.
FORMAT = 1
#: Settings that may change between runs into the same file (they do not change what a chunk produces).
_RESUMABLE_KEYS = ("limit", "batch_size")
#: Check outcomes, in the order they are tested.
REASONS = (
    "unparsable",
    "answer_too_long",
    "answer_not_in_passage",
    "answer_in_question",
    "question_copies_passage",
    "llm_check_no",
    "llm_check_unclear",
    "duplicate_question",
)


@dataclass(frozen=True)
class GenerationSettings:
    """What a generation run does with each chunk (recorded in the sidecar).

    Attributes:
        per_passage: Pairs asked for per chunk.
        copy_span_chars: A question sharing this many consecutive normalised characters with the passage is rejected.
        max_answer_chars: Longest accepted answer, in normalised characters.
        min_passage_chars: Shorter chunks are not used.
        llm_check: Ask the model whether the passage supports each pair that passed the rule checks.
        seed: Seed of the chunk order (the first ``limit`` chunks of that order are used).
        batch_size: Chunks generated together.
    """

    per_passage: int = 1
    copy_span_chars: int = 12
    max_answer_chars: int = 30
    min_passage_chars: int = 100
    llm_check: bool = True
    seed: int = 0
    batch_size: int = 4

    def __post_init__(self) -> None:
        for name in ("per_passage", "copy_span_chars", "max_answer_chars", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.min_passage_chars < 0:
            raise ConfigError(f"min-passage-chars must be >= 0, got {self.min_passage_chars}")


@dataclass
class GenerationReport:
    """What a run did: chunks selected, already done, processed now, and pairs by status and reason."""

    out: Path
    meta: Path
    selected: int = 0
    already_done: int = 0
    processed: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0


def meta_path(out: str | Path) -> Path:
    """The sidecar of a generated file: ``<out>.meta.json``."""
    out = Path(out)
    return out.with_name(out.name + META_SUFFIX)


def select_passages(kb: str | Path | None = None, *, limit: int | None = None, seed: int = 0,
                    min_chars: int = 100) -> list[Passage]:
    """Knowledge-base chunks (as the store indexes them) of at least ``min_chars`` characters, in a seeded order.

    Raises:
        ConfigError: ``limit`` < 1.
        KnowledgeBaseError: missing or malformed source.
    """
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be >= 1, got {limit}")
    source = kb if kb is not None else zhrag_settings.default_kb_source()
    chunks = [p for doc in iter_documents(source) for p in document_passages(doc) if len(p["text"]) >= min_chars]
    random.Random(f"{seed}:generate").shuffle(chunks)
    return chunks[:limit] if limit is not None else chunks


def longest_common_substring(a: str, b: str) -> int:
    """Length of the longest string that occurs in both ``a`` and ``b``."""
    best = 0
    previous = [0] * (len(b) + 1)
    for char in a:
        current = [0] * (len(b) + 1)
        for j, other in enumerate(b, start=1):
            if char == other:
                current[j] = previous[j - 1] + 1
                best = max(best, current[j])
        previous = current
    return best


def rule_check(question: str, answer: str, passage: str, settings: GenerationSettings) -> str | None:
    """The first rule a pair fails (a reason of ``REASONS``), or ``None`` when it passes them all.

    Tests: unparsable (empty question or answer), answer_too_long, answer_not_in_passage, answer_in_question,
    question_copies_passage; all on normalised text.
    """
    q_key, a_key, p_key = normalize_text(question), normalize_text(answer), normalize_text(passage)
    if not q_key or not a_key:
        return "unparsable"
    if len(a_key) > settings.max_answer_chars:
        return "answer_too_long"
    if a_key not in p_key:
        return "answer_not_in_passage"
    if a_key in q_key:
        return "answer_in_question"
    if longest_common_substring(q_key, p_key) >= settings.copy_span_chars:
        return "question_copies_passage"
    return None


def prompt_text(prompt: Prompt) -> str:
    """A prompt as one text: the completion string, or ``[role] content`` per chat message."""
    if isinstance(prompt, str):
        return prompt
    return "\n\n".join(f"[{message.type}] {message.content}" for message in prompt)


def prompt_templates(*, chat: bool, settings: GenerationSettings) -> dict[str, dict[str, str] | None]:
    """The generation and check prompts with ``{passage}`` / ``{question}`` / ``{answer}`` placeholders, and hashes."""
    texts = {"generate": prompt_text(build_generate_prompt("{passage}", chat=chat, n_pairs=settings.per_passage))}
    if settings.llm_check:
        texts["check"] = prompt_text(build_check_prompt("{passage}", "{question}", "{answer}", chat=chat))
    templates: dict[str, dict[str, str] | None] = {"check": None}
    for name, text in texts.items():
        templates[name] = {"sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(), "text": text}
    return templates


def generate_dataset(
    llm: LLM,
    out: str | Path,
    *,
    kb: str | Path | None = None,
    limit: int | None = None,
    settings: GenerationSettings | None = None,
    force: bool = False,
    progress: bool = True,
) -> GenerationReport:
    """Generate and check question/answer pairs for the selected chunks, appending to ``out`` (resumable).

    Raises:
        ConfigError: ``out`` holds a run with another model, prompts or settings (and not ``force``), or a file
            without its sidecar.
        TrainingDataError: ``out`` is damaged (a complete line that is not a generated record).
    """
    settings = settings or GenerationSettings()
    out = Path(out)
    started = time.perf_counter()
    source = Path(kb).expanduser() if kb is not None else zhrag_settings.default_kb_source()
    passages = select_passages(source, limit=limit, seed=settings.seed, min_chars=settings.min_passage_chars)
    meta = _run_meta(llm, source, limit, settings)
    _prepare_output(out, meta, force)
    records = _recover(out)
    done = {record["chunk_id"] for record in records}
    seen = {normalize_text(r["question"]) for r in records if r["status"] == "accepted"}
    todo = [p for p in passages if p["id"] not in done]
    report = GenerationReport(out=out, meta=meta_path(out), selected=len(passages), already_done=len(passages) - len(todo))
    bar = tqdm(total=len(todo), desc="generating pairs", unit="passage", disable=not progress)
    with out.open("ab") as sink:
        for start in range(0, len(todo), settings.batch_size):
            batch = todo[start : start + settings.batch_size]
            for chunk_records in _process_batch(llm, batch, settings, seen):
                append_jsonl(sink, chunk_records)
                report.processed += 1
                report.statuses.update(r["status"] for r in chunk_records)
                report.reasons.update(r["reason"] for r in chunk_records if r["reason"])
            bar.update(len(batch))
            bar.set_postfix(accepted=report.statuses["accepted"], rejected=report.statuses["rejected"])
    bar.close()
    report.seconds = time.perf_counter() - started
    _finish_meta(out, meta, load_generated(out))
    return report


def _run_meta(llm: LLM, kb: Path, limit: int | None, settings: GenerationSettings) -> dict[str, Any]:
    info = llm.load_info
    return {
        "format": FORMAT,
        "model": {
            "model": info.get("model"),
            "adapter": info.get("adapter"),
            "kind": info.get("kind"),
            "source": info.get("source"),
            "is_chat": llm.is_chat,
            "device": info.get("device"),
            "dtype": info.get("dtype"),
        },
        "prompts": prompt_templates(chat=llm.is_chat, settings=settings),
        "settings": {
            **asdict(settings), "kb": str(kb.resolve()), "limit": limit, "passage_chars": PASSAGE_CHARS,
            "max_new_tokens": GENERATE_TOKENS_PER_PAIR * settings.per_passage,
        },
    }


def _fingerprint(meta: Mapping[str, Any]) -> dict[str, Any]:
    """What must match for a run to continue a file: model, adapter, prompt hashes and chunk-level settings."""
    prompts = {name: (value or {}).get("sha256") for name, value in meta.get("prompts", {}).items()}
    run_settings = {k: v for k, v in meta.get("settings", {}).items() if k not in _RESUMABLE_KEYS}
    model = {k: meta.get("model", {}).get(k) for k in ("model", "adapter", "is_chat")}
    return {"format": meta.get("format"), "model": model, "prompts": prompts, "settings": run_settings}


def _prepare_output(out: Path, meta: dict[str, Any], force: bool) -> None:
    """Check that ``out`` may be continued (or start afresh with ``force``), then write the sidecar."""
    sidecar = meta_path(out)
    has_data = out.exists() and out.stat().st_size > 0
    previous = _read_meta(sidecar) if sidecar.exists() else None
    if has_data and not force:
        if previous is None:
            raise ConfigError(f"{out} exists without {sidecar.name}; choose another --out, or --force to replace it")
        old, new = _fingerprint(previous), _fingerprint(meta)
        if old != new:
            changed = sorted(k for k in new if k != "settings" and old.get(k) != new[k])
            changed += [f"{k} setting" for k, v in new["settings"].items() if old.get("settings", {}).get(k) != v]
            raise ConfigError(
                f"{out} was generated with other {', '.join(changed)}; use another --out, or --force to start afresh"
            )
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if force:
        replaced = set_aside(out)
        if replaced is not None and sidecar.exists():
            sidecar.rename(meta_path(replaced))
        set_aside(default_decisions_path(out))  # its ids would name the new run's pairs
    out.parent.mkdir(parents=True, exist_ok=True)
    created = previous.get("created", now) if previous and not force else now
    session = {"code": code_version(), "load_average_at_start": load_average()}
    write_json_atomic(sidecar, {**meta, "created": created, "updated": now, **session})


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(f"{path}: unreadable generation sidecar ({error})") from None
    if not isinstance(meta, dict):
        raise ConfigError(f"{path}: generation sidecar is not a JSON object")
    return meta


def _finish_meta(out: Path, meta: dict[str, Any], records: Sequence[Mapping[str, Any]]) -> None:
    """Record the totals of the whole file in the sidecar."""
    sidecar = meta_path(out)
    stored = _read_meta(sidecar)
    stored["updated"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    stored["load_average_at_end"] = load_average()
    stored["settings"] = meta["settings"]
    stored["counts"] = {
        "passages": len({r["chunk_id"] for r in records}),
        "pairs": len(records),
        "status": dict(Counter(r["status"] for r in records)),
        "reason": dict(Counter(r["reason"] for r in records if r["reason"])),
    }
    write_json_atomic(sidecar, stored)


def _process_batch(
    llm: LLM, batch: Sequence[Passage], settings: GenerationSettings, seen: set[str]
) -> list[list[dict[str, Any]]]:
    """Records of each chunk of ``batch``: generate, parse, rule-check, LLM-check, de-duplicate (updating ``seen``)."""
    texts = [format_passage(p, PASSAGE_CHARS) for p in batch]
    prompts = [build_generate_prompt(t, chat=llm.is_chat, n_pairs=settings.per_passage) for t in texts]
    stop = () if llm.is_chat else GENERATE_STOP
    outputs = llm.generate(prompts, max_new_tokens=GENERATE_TOKENS_PER_PAIR * settings.per_passage, stop=stop)
    grouped: list[list[dict[str, Any]]] = []
    for passage, text, output in zip(batch, texts, outputs, strict=True):
        pairs = parse_pairs(output, completion=not llm.is_chat)[: settings.per_passage] or [("", "")]
        grouped.append([_record(passage, text, output, n, q, a, settings) for n, (q, a) in enumerate(pairs, 1)])
    if settings.llm_check:
        _llm_check(llm, [r for records in grouped for r in records if r["reason"] is None])
    for records in grouped:
        for record in records:
            if record["reason"] is None:
                key = normalize_text(record["question"])
                if key in seen:
                    record["reason"] = "duplicate_question"
                seen.add(key)
            record["status"] = "accepted" if record["reason"] is None else "rejected"
            record["passage_records"] = len(records)
    return grouped


def _record(
    passage: Passage, text: str, output: str, number: int, question: str, answer: str, settings: GenerationSettings
) -> dict[str, Any]:
    reason = rule_check(question, answer, text, settings)
    lcs = longest_common_substring(normalize_text(question), normalize_text(text)) if question else 0
    return {
        "id": f"{passage['id']}/{number}",
        "passage_id": passage["id"].rsplit("#", 1)[0],
        "chunk_id": passage["id"],
        "title": passage.get("title", ""),
        "passage": text,
        "question": question,
        "answer": answer,
        "status": None,
        "reason": reason,
        "lcs": lcs,
        "llm_check": None,
        "generation": output,
    }


def _llm_check(llm: LLM, records: Sequence[dict[str, Any]]) -> None:
    """Ask the model whether each record's passage supports its answer; set ``llm_check`` and the reason."""
    prompts = [build_check_prompt(r["passage"], r["question"], r["answer"], chat=llm.is_chat) for r in records]
    # No stop string: the verdict is a few tokens, and parse_judgement reads only the first line, while stop
    # strings cost seconds per call with a large vocabulary (transformers builds its stop tables each time).
    verdicts = llm.generate(prompts, max_new_tokens=CHECK_MAX_NEW_TOKENS, stop=()) if prompts else []
    for record, verdict in zip(records, verdicts, strict=True):
        record["llm_check"] = verdict
        supported = parse_judgement(verdict)
        if supported is not True:
            record["reason"] = "llm_check_unclear" if supported is None else "llm_check_no"




def _recover(out: Path) -> list[dict[str, Any]]:
    """The complete records of ``out``, after cutting off what a kill left: a partial line, a partial chunk."""
    if not out.exists():
        return []
    content = out.read_bytes()
    keep = content.rfind(b"\n") + 1
    ends, position = [], 0
    for line in content[:keep].split(b"\n")[:-1]:
        position += len(line) + 1
        if line.strip():
            ends.append(position)
    records = load_generated(out, content=content[:keep])
    if records:
        last = records[-1]["chunk_id"]
        size = next((n for n, r in enumerate(reversed(records)) if r["chunk_id"] != last), len(records))
        if size < records[-1]["passage_records"]:
            records = records[:-size]
            keep = ends[len(records) - 1] if records else 0
    if keep < len(content):
        with out.open("r+b") as handle:
            handle.truncate(keep)
            os.fsync(handle.fileno())
    return records


_REQUIRED = {"id": str, "passage_id": str, "chunk_id": str, "question": str, "answer": str, "status": str,
             "passage": str, "passage_records": int}


def load_generated(path: str | Path, *, content: bytes | None = None) -> list[dict[str, Any]]:
    """The records of a generated file (or of ``content``, its bytes), checked field by field.

    Raises:
        TrainingDataError: unreadable file, malformed line, missing or mistyped field, unknown status or
            duplicate id, named by file and line.
    """
    path = Path(path)
    rows: Iterable[tuple[str, Any]] = (
        iter_jsonl(path, TrainingDataError) if content is None else _parse_lines(path, content)
    )
    records, ids = [], set()
    for where, row in rows:
        if not isinstance(row, dict):
            raise TrainingDataError(f"{where}: expected a JSON object, got {type(row).__name__}")
        for name, kind in _REQUIRED.items():
            if not isinstance(row.get(name), kind):
                raise TrainingDataError(f"{where}: field {name!r} missing or not {kind.__name__}; not a generated pair")
        if row["status"] not in ("accepted", "rejected"):
            raise TrainingDataError(f"{where}: unknown status {row['status']!r}")
        if row["id"] in ids:
            raise TrainingDataError(f"{where}: duplicate id {row['id']!r}")
        ids.add(row["id"])
        records.append(row)
    return records


def _parse_lines(path: Path, content: bytes) -> Iterable[tuple[str, Any]]:
    for number, line in enumerate(content.split(b"\n"), start=1):
        if line.strip():
            try:
                yield f"{path}:{number}", json.loads(line)
            except (ValueError, UnicodeDecodeError):
                raise TrainingDataError(f"{path}:{number}: malformed JSON line; the generated file is damaged") from None


def generated_rc_pairs(path: str | Path, decisions: str | Path | None = None) -> list[RCPair]:
    """The accepted pairs of a generated file as reading-comprehension pairs for ``build_rc_examples``.

    With ``decisions`` (a review decisions file), reviewed pairs take the reviewer's verdict and edits.
    Ids are ``gen:<record id>``, the source ``generated``, the passage the KB document the chunk came from.
    """
    records = load_generated(path)
    if decisions is not None:
        records = apply_decisions(records, read_decisions(decisions))
    return [
        RCPair(id=f"gen:{r['id']}", source="generated", question=r["question"], answers=(r["answer"],),
               passage_id=r["passage_id"])
        for r in records
        if r["status"] == "accepted"
    ]


def write_rc_pairs(pairs: Sequence[RCPair], out: str | Path) -> Path:
    """Write pairs in the reading-comprehension layout that ``load_rc_pairs`` (``build-data --source rc:FILE``) reads."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = ({"id": p.id, "source": p.source, "question": p.question, "answers": list(p.answers),
             "passage_id": p.passage_id} for p in pairs)
    out.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return out
