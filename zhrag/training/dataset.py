"""The examples a training run uses: one task's examples of a ShareGPT / Alpaca file or ``build-data`` folder."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from zhrag.errors import ConfigError, TrainingDataError
from zhrag.training.card import examples_sha256, read_card, read_json_object
from zhrag.training.examples import Example
from zhrag.training.formats import DATASET_INFO_FILE, TASKS, import_examples


@dataclass(frozen=True)
class TrainingData:
    """The examples of one task selected for training, and where they came from."""

    path: Path
    examples: list[Example]
    sha256: str


def load_training_data(data: str | Path, task: str, *, limit: int | None = None, seed: int = 0) -> TrainingData:
    """The ``task`` examples of a ShareGPT / Alpaca file, or of the training split of a ``zhrag build-data`` folder.

    A folder must list exactly one ``*_train`` dataset in its ``dataset_info.json`` (or hold exactly one
    ``*_train.jsonl`` file). With ``limit``, a seeded sample of that many examples is kept, in file order.

    Raises:
        TrainingDataError: missing file or folder, unknown format, malformed row (named by file and line),
            no example of ``task``.
        ConfigError: unknown task.
    """
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; use one of {list(TASKS)}")
    path = Path(data).expanduser()
    if path.is_dir():
        path, format = _train_file(path)
    elif path.is_file():
        format = None
    else:
        raise TrainingDataError(f"training data not found: {path}")
    examples = import_examples(path, format=format)
    selected = [example for example in examples if example["task"] == task]
    if not selected:
        tasks = sorted({example["task"] for example in examples})
        raise TrainingDataError(f"{path}: no {task!r} examples (the file holds {', '.join(tasks)} examples)")
    selected = _seeded_sample(selected, limit, seed)
    return TrainingData(path=path, examples=selected, sha256=examples_sha256(selected))


def _seeded_sample(examples: list[Example], limit: int | None, seed: int) -> list[Example]:
    """The seeded sample of at most ``limit`` examples a training run keeps, in file order."""
    if limit is None or limit >= len(examples):
        return examples
    chosen = sorted(random.Random(f"{seed}:limit").sample(range(len(examples)), limit))
    return [examples[index] for index in chosen]


def _train_file(directory: Path) -> tuple[Path, str | None]:
    """The training file of a data folder and its format (from ``dataset_info.json`` when listed there)."""
    info_path = directory / DATASET_INFO_FILE
    if info_path.is_file():
        info = read_json_object(info_path, TrainingDataError) or {}
        entries = {name: entry for name, entry in info.items() if name.endswith("_train") and isinstance(entry, dict)}
        if len(entries) != 1:
            raise TrainingDataError(
                f"{info_path}: expected exactly one '*_train' dataset, found {sorted(entries) or 'none'}; "
                "pass the training file itself as --data"
            )
        [entry] = entries.values()
        file = directory / str(entry.get("file_name", ""))
        if not file.is_file():
            raise TrainingDataError(f"{info_path}: listed training file not found: {file}")
        formatting = entry.get("formatting")
        return file, formatting if formatting in ("sharegpt", "alpaca") else None
    files = sorted(directory.glob("*_train.jsonl"))
    if len(files) != 1:
        raise TrainingDataError(f"{directory}: expected one *_train.jsonl file or a {DATASET_INFO_FILE}")
    return files[0], None


@dataclass(frozen=True)
class UntrainedExamples:
    """Training-split examples an adapter did not train on (see :func:`untrained_examples`)."""

    path: Path
    examples: list[Example]
    trained: int
    same_paragraph: int


def untrained_examples(data: str | Path, task: str, adapter: str | Path) -> UntrainedExamples:
    """The ``task`` examples of ``data``'s training split that the adapter in ``adapter`` did not train on.

    The adapter's training card names its seeded sample (``limit``, ``seed``) and that sample's digest; the sample is
    drawn again here and must match the digest. Left out are the sampled examples and every other example about the
    same paragraph (``meta.passage_id``), so what remains is unseen by the adapter, questions and paragraphs alike.

    Raises:
        TrainingDataError: no training card, a card of another task or other data, or nothing left.
    """
    folder = Path(adapter).expanduser()
    card = read_card(folder)
    if card is None:
        raise TrainingDataError(f"{folder} has no training card (train it with zhrag train)")
    hyper, recorded = card.get("hyperparameters") or {}, card.get("data") or {}
    if card.get("task") != task:
        raise TrainingDataError(f"adapter {folder} was trained for {card.get('task')!r}, not {task!r}")
    full = load_training_data(data, task)
    trained = _seeded_sample(full.examples, hyper.get("limit"), int(hyper.get("seed", 0)))
    if examples_sha256(trained) != recorded.get("sha256"):
        raise TrainingDataError(f"adapter {folder} was not trained on the {task!r} examples of {full.path}")
    trained_ids = {example["id"] for example in trained}
    paragraphs = {_paragraph(example) for example in trained} - {None}
    unseen = [example for example in full.examples if example["id"] not in trained_ids]
    kept = [example for example in unseen if _paragraph(example) not in paragraphs]
    if not kept:
        raise TrainingDataError(f"adapter {folder} trained on every {task!r} example of {full.path} (or their paragraphs)")
    return UntrainedExamples(full.path, kept, len(trained_ids), len(unseen) - len(kept))


def _paragraph(example: Example) -> str | None:
    passage = (example.get("meta") or {}).get("passage_id")
    return str(passage) if passage else None
