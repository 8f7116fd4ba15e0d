"""Write and read fine-tuning examples as ShareGPT or Alpaca files, with LLaMA-Factory ``dataset_info.json`` entries.

Files are written with the ``datasets`` library (``Dataset.from_list(...).to_json``), an optional dependency
(``pip install 'zhrag[train]'``, ``datasets>=4.7`` for its ``Json`` feature that keeps ``meta`` as written).
A ``.jsonl`` path gives JSON lines, a ``.json`` path one JSON array; both formats keep the ``id``, ``task``
and ``meta`` columns, which LLaMA-Factory ignores.

- ShareGPT: ``{"id", "task", "conversations": [{"from", "value"}], "meta"}``, as the examples are built.
  Reading also accepts OpenAI-style ``messages`` (``role``/``content``), a ``system`` column and
  LLaMA-Factory's ``observation`` tag for tool results.
- Alpaca: ``{"id", "task", "instruction", "input", "output", "system", "history", "meta"}``: the last human
  turn is the instruction, the last gpt turn the output, earlier (human, gpt) pairs the history. Tool turns
  have no Alpaca form. Reading joins a non-empty ``input`` to the instruction with a newline, as
  LLaMA-Factory does.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from zhrag.errors import TrainingDataError
from zhrag.jsonl import iter_jsonl
from zhrag.training.examples import Example, ExampleSplits, Turn, check_conversation

FORMATS = ("sharegpt", "alpaca")
#: The ``dataset_info.json`` file LLaMA-Factory reads from its ``dataset_dir``.
DATASET_INFO_FILE = "dataset_info.json"
#: Task given to imported records that do not say theirs.
DEFAULT_TASK = "answer"
TASKS = ("answer", "judge", "tools")

#: Speaker tags read from ShareGPT ``from`` (LLaMA-Factory's defaults) and OpenAI ``role`` fields.
_SHAREGPT_TAGS = {
    "system": "system", "human": "human", "gpt": "gpt", "function_call": "function_call", "tool": "tool",
    "observation": "tool",
}
_OPENAI_ROLES = {"system": "system", "user": "human", "assistant": "gpt", "tool": "tool"}
_SUFFIX_LINES = {".jsonl": True, ".json": False}


def dataset_info_entry(file_name: str, *, format: str = "sharegpt", tools: bool = False) -> dict[str, Any]:
    """LLaMA-Factory's description of a file written by :func:`export_examples` in ``format`` (``tools``: the
    file has a ``tools`` column, as tool-use examples do)."""
    _check_format(format)
    if format == "alpaca":
        columns = {"prompt": "instruction", "query": "input", "response": "output", "system": "system"}
        return {"file_name": file_name, "formatting": "alpaca", "columns": {**columns, "history": "history"}}
    return {
        "file_name": file_name,
        "formatting": "sharegpt",
        "columns": {"messages": "conversations", **({"tools": "tools"} if tools else {})},
        "tags": {
            "role_tag": "from",
            "content_tag": "value",
            "user_tag": "human",
            "assistant_tag": "gpt",
            "observation_tag": "tool",
            "function_tag": "function_call",
            "system_tag": "system",
        },
    }


def write_dataset_info(directory: str | Path, entries: Mapping[str, Mapping[str, Any]]) -> Path:
    """Add (or replace) ``entries`` in ``directory/dataset_info.json``, keeping the other datasets listed there."""
    path = Path(directory) / DATASET_INFO_FILE
    info: dict[str, Any] = {}
    if path.is_file():
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise TrainingDataError(f"{path}: not a JSON file ({error})") from None
        if not isinstance(info, dict):
            raise TrainingDataError(f"{path}: expected a JSON object of dataset descriptions")
    info.update({name: dict(entry) for name, entry in entries.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return path


def export_examples(examples: Sequence[Example], path: str | Path, *, format: str = "sharegpt") -> Path:
    """Write ``examples`` to ``path`` (``.jsonl``: JSON lines, ``.json``: one array) in ``format``.

    Raises:
        TrainingDataError: unknown format or suffix, no examples, a malformed example, an example Alpaca cannot
            hold, or ``datasets`` missing.
    """
    _check_format(format)
    path = Path(path)
    lines = _lines(path)
    if not examples:
        raise TrainingDataError(f"no examples to write to {path}")
    for example in examples:
        _check_example(example, f"example {example.get('id')!r}")
    datasets = _datasets()
    rows = [to_alpaca(e) for e in examples] if format == "alpaca" else [dict(e) for e in examples]
    tools = _has_tools(examples, format)
    if tools:  # LLaMA-Factory's ShareGPT "tools" column: every row has one (empty for examples without tools)
        rows = [{**row, "tools": row.get("tools") or ""} for row in rows]
    features = _features(datasets, format, tools=tools)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = datasets.Dataset.from_list(rows, features=features)
    options = {} if lines else {"indent": 2, "batch_size": len(rows)}
    table.to_json(str(path), lines=lines, force_ascii=False, **options)
    return path


def import_examples(path: str | Path, *, format: str | None = None, default_task: str = DEFAULT_TASK) -> list[Example]:
    """Read examples from a ShareGPT or Alpaca ``.jsonl`` / ``.json`` file (``format=None``: from the first row).

    Records without ``id`` are named ``<file name>:<row number>``, without ``task`` get ``default_task``.

    Raises:
        TrainingDataError: unreadable file, unknown or undetectable format, or a malformed row (named by file
            and line or row), including a conversation with no gpt turn.
    """
    if format is not None:
        _check_format(format)
    if default_task not in TASKS:
        raise TrainingDataError(f"unknown task {default_task!r}; use one of {list(TASKS)}")
    path = Path(path)
    examples = []
    for number, (where, row) in enumerate(_rows(path), start=1):
        if not isinstance(row, Mapping):
            raise TrainingDataError(f"{where}: expected a JSON object, got {type(row).__name__}")
        format = format or _detect_format(row, where)
        turns = alpaca_conversation(row, where) if format == "alpaca" else sharegpt_conversation(row, where)
        record = {
            "id": row.get("id") or f"{path.name}:{number}",
            "task": row.get("task") or default_task,
            "conversations": turns,
            "meta": row.get("meta") or {},
        }
        if format == "sharegpt" and row.get("tools"):
            record["tools"] = row["tools"] if isinstance(row["tools"], str) else json.dumps(row["tools"], ensure_ascii=False)
        examples.append(_check_example(record, where))
    if not examples:
        raise TrainingDataError(f"{path}: no examples")
    return examples


def write_splits(
    splits: ExampleSplits,
    directory: str | Path,
    *,
    format: str = "sharegpt",
    name: str = "zhrag",
    rejected: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Path]:
    """Write the train and (when not empty) eval examples, their ``dataset_info.json`` entries and a manifest.

    Files in ``directory``: ``<name>_train.jsonl``, ``<name>_eval.jsonl``, ``dataset_info.json`` (entries
    ``<name>_train`` / ``<name>_eval``), ``<name>_manifest.json`` (example counts per split and task, the
    held-out passage or question ids, the ids kept out of training, and the skip counts) and, when given,
    ``<name>_rejected.jsonl`` (candidates that failed a check, each with its ``reason``; never trained on).
    """
    if not splits.train and not splits.eval:
        raise TrainingDataError("no examples to write")
    directory = Path(directory)
    written: dict[str, Path] = {}
    entries = {}
    for split, examples in (("train", splits.train), ("eval", splits.eval)):
        if examples:
            written[split] = export_examples(examples, directory / f"{name}_{split}.jsonl", format=format)
            entries[f"{name}_{split}"] = dataset_info_entry(
                written[split].name, format=format, tools=_has_tools(examples, format)
            )
    written["dataset_info"] = write_dataset_info(directory, entries)
    manifest = {
        "format": format,
        "counts": {
            split: dict(Counter(e["task"] for e in examples))
            for split, examples in (("train", splits.train), ("eval", splits.eval))
        },
        "eval_groups": splits.eval_groups,
        "excluded_ids": splits.excluded_ids,
        "skipped": dict(splits.skipped),
    }
    if rejected:
        written["rejected"] = directory / f"{name}_rejected.jsonl"
        written["rejected"].write_text(
            "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in rejected), encoding="utf-8"
        )
        manifest["rejected"] = dict(Counter(str(record.get("reason")) for record in rejected))
    written["manifest"] = directory / f"{name}_manifest.json"
    written["manifest"].write_text(json.dumps(manifest, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return written


def to_alpaca(example: Example) -> dict[str, Any]:
    """The Alpaca row of an example: final human turn → instruction, final gpt turn → output, earlier pairs → history.

    Raises:
        TrainingDataError: the conversation has tool turns, does not alternate human/gpt, or does not end
            with a gpt turn.
    """
    turns = list(example["conversations"])
    system = turns.pop(0)["value"] if turns and turns[0]["from"] == "system" else ""
    speakers = [turn["from"] for turn in turns]
    if len(turns) % 2 or speakers != ["human", "gpt"] * (len(turns) // 2):
        raise TrainingDataError(
            f"example {example['id']!r}: Alpaca needs alternating human/gpt turns ending with gpt; export it as sharegpt"
        )
    values = [turn["value"] for turn in turns]
    pairs = [list(pair) for pair in zip(values[0::2], values[1::2], strict=True)]
    (instruction, output), history = pairs[-1], pairs[:-1]
    return {
        "id": example["id"],
        "task": example["task"],
        "instruction": instruction,
        "input": "",
        "output": output,
        "system": system,
        "history": history,
        "meta": example["meta"],
    }


def alpaca_conversation(row: Mapping[str, Any], where: str) -> list[Turn]:
    """The turns of an Alpaca row (``instruction``, optional ``input``, ``output``, ``system``, ``history``)."""
    fields = {name: row.get(name) or "" for name in ("instruction", "input", "output", "system")}
    if not all(isinstance(value, str) for value in fields.values()):
        raise TrainingDataError(f"{where}: instruction, input, output and system must be strings")
    if not fields["instruction"] or not fields["output"]:
        raise TrainingDataError(f"{where}: Alpaca row needs a non-empty 'instruction' and 'output'")
    history = row.get("history") or []
    if not isinstance(history, list) or not all(
        isinstance(pair, list) and len(pair) == 2 and all(isinstance(text, str) for text in pair) for pair in history
    ):
        raise TrainingDataError(f"{where}: 'history' must be a list of [instruction, response] pairs")
    prompt = f"{fields['instruction']}\n{fields['input']}" if fields["input"] else fields["instruction"]
    turns = [_turn("system", fields["system"])] if fields["system"] else []
    for human, gpt in [*history, [prompt, fields["output"]]]:
        turns += [_turn("human", human), _turn("gpt", gpt)]
    return turns


def sharegpt_conversation(row: Mapping[str, Any], where: str) -> list[Turn]:
    """The turns of a ShareGPT row (``conversations`` of ``from``/``value``) or OpenAI row (``messages``)."""
    if "conversations" in row:
        messages, role_key, text_key, tags = row["conversations"], "from", "value", _SHAREGPT_TAGS
    elif "messages" in row:
        messages, role_key, text_key, tags = row["messages"], "role", "content", _OPENAI_ROLES
    else:
        raise TrainingDataError(f"{where}: ShareGPT row needs 'conversations' (or OpenAI-style 'messages')")
    if not isinstance(messages, list):
        raise TrainingDataError(f"{where}: {'conversations' if role_key == 'from' else 'messages'} must be a list")
    turns = [_turn("system", row["system"])] if isinstance(row.get("system"), str) and row["system"] else []
    for number, message in enumerate(messages, start=1):
        if not isinstance(message, Mapping) or message.get(role_key) not in tags:
            speaker = message.get(role_key) if isinstance(message, Mapping) else message
            raise TrainingDataError(f"{where}: turn {number} has unknown speaker {speaker!r}; use one of {list(tags)}")
        turns.append(_turn(tags[message[role_key]], message.get(text_key)))
    return turns


def _turn(speaker: str, value: Any) -> Turn:
    return Turn({"from": speaker, "value": value})


def _check_example(example: Mapping[str, Any], where: str) -> Example:
    """Raise a located ``TrainingDataError`` unless ``example`` is a well-formed record."""
    if not isinstance(example.get("id"), str) or not example["id"]:
        raise TrainingDataError(f"{where}: 'id' must be a non-empty string")
    if example.get("task") not in TASKS:
        raise TrainingDataError(f"{where}: unknown task {example.get('task')!r}; use one of {list(TASKS)}")
    if not isinstance(example.get("meta"), dict):
        raise TrainingDataError(f"{where}: 'meta' must be an object")
    try:
        check_conversation(example.get("conversations"))
    except TrainingDataError as error:
        raise TrainingDataError(f"{where}: {error}") from None
    checked = Example(id=example["id"], task=example["task"], conversations=example["conversations"], meta=example["meta"])
    if example.get("tools"):
        if not isinstance(example["tools"], str):
            raise TrainingDataError(f"{where}: 'tools' must be a JSON string of function specs")
        checked["tools"] = example["tools"]
    return checked


def _detect_format(row: Mapping[str, Any], where: str) -> str:
    if "conversations" in row or "messages" in row:
        return "sharegpt"
    if "instruction" in row and "output" in row:
        return "alpaca"
    raise TrainingDataError(
        f"{where}: unknown data format: expected ShareGPT 'conversations'/'messages' or Alpaca 'instruction'/'output'"
    )


def _rows(path: Path) -> Iterator[tuple[str, Any]]:
    """``(where, row)`` of a JSON-lines file or a JSON array file."""
    if _lines(path):
        yield from iter_jsonl(path, TrainingDataError)
        return
    try:
        rows = json.loads(path.read_text(encoding="utf-8-sig"))
    except OSError as error:
        raise TrainingDataError(f"{path}: cannot be read ({error.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise TrainingDataError(f"{path}: not a JSON file ({error})") from None
    if not isinstance(rows, list):
        raise TrainingDataError(f"{path}: expected a JSON array of examples")
    for number, row in enumerate(rows, start=1):
        yield f"{path}: row {number}", row


def _lines(path: Path) -> bool:
    """Whether ``path`` is a JSON-lines file (``.jsonl``) rather than one JSON array (``.json``)."""
    if path.suffix.lower() not in _SUFFIX_LINES:
        raise TrainingDataError(f"{path}: unknown file type {path.suffix!r}; use .jsonl or .json")
    return _SUFFIX_LINES[path.suffix.lower()]


def _check_format(format: str) -> None:
    if format not in FORMATS:
        raise TrainingDataError(f"unknown data format {format!r}; use one of {list(FORMATS)}")


def _datasets() -> Any:
    try:
        import datasets  # optional dependency: zhrag[train]
    except ImportError:
        raise TrainingDataError(
            "writing training files needs the optional 'datasets' package (pip install 'zhrag[train]')"
        ) from None
    return datasets


def _has_tools(examples: Sequence[Example], format: str) -> bool:
    """Whether a ShareGPT file of ``examples`` gets LLaMA-Factory's ``tools`` column (some example has tools)."""
    return format == "sharegpt" and any("tools" in example for example in examples)


def _features(datasets: Any, format: str, *, tools: bool = False) -> Any:
    """Column types: strings, the turns or the history as lists, ``meta`` as free JSON (and ``tools``, a JSON
    string of function specs, for tool-use examples)."""
    text = datasets.Value("string")
    if format == "alpaca":
        columns = dict.fromkeys(("instruction", "input", "output", "system"), text)
        columns["history"] = datasets.List(datasets.List(text))
    else:
        columns = {"conversations": datasets.List({"from": text, "value": text})}
        if tools:
            columns["tools"] = text
    return datasets.Features({"id": text, "task": text, **columns, "meta": datasets.Json()})
