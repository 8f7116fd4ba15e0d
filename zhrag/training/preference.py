"""Preference pairs for the answer node: ``zhrag build-data --task preference`` (DPO data).

The model answers each training prompt several times (seeded sampling, :meth:`~zhrag.models.base.LLM.generate_samples`),
each answer is cleaned as the answer node cleans it and graded offline by the rule grader against the gold answers.
A prompt gives one pair: *chosen* is a correct answer (the most frequent one), or 不知道 where no sample is correct;
*rejected* is a wrong answer (the most frequent wrong one). A prompt without a wrong sample gives no pair: the manifest
counts why (``all_correct``, ``correct_or_refused``, ``all_refused``).

Prompts come from training material only:

- closed-book prompts from a question file (the dev set), leaving out its leading ``QA_EXCLUDED_FIRST`` questions
  and every seeded sample drawn by the project's evaluation and tuning runs (:data:`EVALUATION_DRAWS`, the
  ``--sample/--seed`` settings recorded in ``docs/results/*/run.json``), drawn exactly as ``load_questions`` draws;
- prompts with passages from the training split of the reading-comprehension pairs (the answer examples of
  ``build-data --task answer``: the pair's passage among distractors; held-out passages stay out).

Files (LLaMA-Factory's preference format): ``<name>_train.jsonl`` / ``<name>_eval.jsonl`` with the prompt turns in
``conversations`` (ShareGPT) or ``instruction``/``system`` (Alpaca) and ``chosen`` / ``rejected`` replies,
``dataset_info.json`` entries with ``"ranking": true``, and ``<name>_manifest.json`` (counts and reasons).
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zhrag.errors import ConfigError, TrainingDataError
from zhrag.evaluation.datasets import Question, load_questions
from zhrag.evaluation.rule_grader import Grade, grade_by_rules
from zhrag.prompts import Prompt, build_answer_prompt
from zhrag.prompts.answer import UNKNOWN_ANSWER, clean_answer
from zhrag.training.examples import (
    DEFAULT_EVAL_FRACTION,
    QA_EXCLUDED_FIRST,
    Example,
    Turn,
    conversation,
    example_prompt,
)
from zhrag.training.formats import DATASET_INFO_FILE, dataset_info_entry, to_alpaca, write_dataset_info

#: Task name of preference examples (they train the answer node).
PREFERENCE_TASK = "answer"


@dataclass(frozen=True)
class Draw:
    """One seeded question sample of an evaluation or tuning run: ``load_questions(sample=, seed=, exclude_sample=,
    exclude_seed=)``."""

    sample: int
    seed: int
    exclude_sample: int | None = None
    exclude_seed: int = 0


#: The samples of the dev set that the project's committed runs evaluate or tune on (docs/results/*/run.json):
#: dev300 (300, seed 0), the agent's dev100 (100, seed 0), tune100 (100, seed 1) and ragas30 (30, seed 2), the last
#: two drawn after leaving out dev300.
EVALUATION_DRAWS = (Draw(300, 0), Draw(100, 0), Draw(100, 1, 300, 0), Draw(30, 2, 300, 0))

#: ``(prompts, n, seed)`` → ``n`` raw sampled completions per prompt.
Sampler = Callable[[list[Prompt], int, int], list[list[str]]]


@dataclass(frozen=True)
class PromptItem:
    """One training prompt of the answer node with its gold answers.

    Attributes:
        id: Question or pair id.
        kind: ``closed_book`` or ``passages``.
        question: The question (for cleaning and grading).
        answers: Accepted gold answers.
        turns: The prompt as ShareGPT turns (without the reply).
        prompt: The prompt the model is sampled with.
    """

    id: str
    kind: str
    question: str
    answers: tuple[str, ...]
    turns: tuple[Turn, ...]
    prompt: Prompt


@dataclass
class PreferenceSplits:
    """Preference examples (each an :class:`Example` whose ``conversations`` end before the reply, plus ``chosen``
    and ``rejected`` turns) and the manifest of how they were made."""

    train: list[dict[str, Any]] = field(default_factory=list)
    eval: list[dict[str, Any]] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)


def training_questions(
    source: str | Path, *, draws: Sequence[Draw] = EVALUATION_DRAWS, exclude_first: int = QA_EXCLUDED_FIRST
) -> tuple[list[Question], int]:
    """The questions of ``source`` outside its first ``exclude_first`` and outside every draw of ``draws``, and how
    many were left out.

    Raises:
        DatasetError: unreadable question file.
    """
    questions = load_questions(source)
    excluded = {question.id for question in questions[:exclude_first]}
    for draw in draws:
        if draw.sample < len(questions):
            excluded |= {
                question.id for question in load_questions(
                    source, sample=draw.sample, seed=draw.seed, exclude_sample=draw.exclude_sample,
                    exclude_seed=draw.exclude_seed,
                )
            }
        else:
            excluded |= {question.id for question in questions}
    return [question for question in questions if question.id not in excluded], len(excluded)


def closed_book_items(questions: Iterable[Question], *, chat: bool) -> list[PromptItem]:
    """Closed-book answer prompts (no passages) of ``questions``."""
    items = []
    for question in questions:
        prompt = build_answer_prompt(question.question, [], chat=chat)
        turns = tuple(conversation(prompt, "")[:-1])
        items.append(PromptItem(question.id, "closed_book", question.question, (question.answer,), turns, prompt))
    return items


def passage_items(examples: Iterable[Example], questions: Mapping[str, str], *, chat: bool) -> list[PromptItem]:
    """Answer prompts with passages of ``examples`` (answer examples of the reading pairs' training split);
    ``questions`` maps a pair id (the examples' ``question_id``) to its question."""
    items = []
    for example in examples:
        meta = example.get("meta") or {}
        answers = tuple(meta.get("answers") or [example["conversations"][-1]["value"]])
        question = questions.get(str(meta.get("question_id")), "")
        prompt = example_prompt(example, chat=chat)
        items.append(
            PromptItem(example["id"], "passages", question, answers, tuple(example["conversations"][:-1]), prompt)
        )
    return items


def grade(item: PromptItem, answer: str) -> Grade:
    """The rule grade of ``answer``: correct if it matches any gold answer, else incorrect or not attempted."""
    grades = {grade_by_rules(item.question, gold, answer) for gold in item.answers}
    if Grade.CORRECT in grades:
        return Grade.CORRECT
    return Grade.INCORRECT if Grade.INCORRECT in grades else Grade.NOT_ATTEMPTED


def choose_pair(item: PromptItem, answers: Sequence[str]) -> tuple[dict[str, Any] | None, str]:
    """The preference pair of ``item`` from its cleaned sampled ``answers`` and the outcome: ``chosen_correct`` or
    ``chosen_unknown`` with the pair, or (no pair) ``all_correct``, ``correct_or_refused`` or ``all_refused``."""
    grades = [grade(item, answer) for answer in answers]
    correct = [a for a, g in zip(answers, grades, strict=True) if g is Grade.CORRECT]
    wrong = [a for a, g in zip(answers, grades, strict=True) if g is Grade.INCORRECT]
    if not wrong:
        if correct and len(correct) == len(answers):
            return None, "all_correct"
        return None, "correct_or_refused" if correct else "all_refused"
    chosen = _most_common(correct) if correct else UNKNOWN_ANSWER
    outcome = "chosen_correct" if correct else "chosen_unknown"
    rejected = _most_common(wrong)
    example = {
        "id": item.id,
        "task": PREFERENCE_TASK,
        "conversations": [dict(turn) for turn in item.turns],
        "chosen": {"from": "gpt", "value": chosen},
        "rejected": {"from": "gpt", "value": rejected},
        "meta": {
            "kind": item.kind,
            "question": item.question,
            "answers": list(item.answers),
            "samples": list(answers),
            "grades": [g.value for g in grades],
            "chosen_reason": outcome,
            "rejected_reason": "incorrect",
        },
    }
    return example, outcome


def _most_common(values: Sequence[str]) -> str:
    """The most frequent value (the first seen among equals)."""
    counts = Counter(values)
    return max(values, key=lambda value: (counts[value], -values.index(value)))


def build_preference_pairs(
    items: Sequence[PromptItem],
    sampler: Sampler,
    *,
    samples: int = 4,
    seed: int = 0,
    eval_fraction: float = DEFAULT_EVAL_FRACTION,
    batch: int = 8,
    progress: bool = False,
) -> PreferenceSplits:
    """Sample ``samples`` answers per item, grade them and pair them (see the module docstring).

    Each item's samples are drawn with ``seed``, so they do not depend on the other items. A seeded
    ``eval_fraction`` of the pairs (by id) forms the eval split.

    Raises:
        ConfigError: fewer than 2 samples; TrainingDataError: no item gave a pair.
    """
    if samples < 2:
        raise ConfigError(f"--samples must be >= 2 to find a wrong and a right answer, got {samples}")
    from tqdm.auto import tqdm

    pairs: list[dict[str, Any]] = []
    outcomes: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    with tqdm(total=len(items), desc="sampling answers", unit="prompt", disable=not progress) as bar:
        for start in range(0, len(items), batch):
            chunk = items[start : start + batch]
            raw = sampler([item.prompt for item in chunk], samples, seed)
            for item, texts in zip(chunk, raw, strict=True):
                pair, outcome = choose_pair(item, [clean_answer(text, item.question) for text in texts])
                outcomes[outcome] += 1
                if pair is not None:
                    pairs.append(pair)
                    kinds[item.kind] += 1
            bar.update(len(chunk))
    if not pairs:
        raise TrainingDataError(f"no preference pair: no prompt had a wrong sampled answer ({dict(outcomes)})")
    held = {pair["id"] for pair in pairs if random.Random(f"{seed}:eval:{pair['id']}").random() < eval_fraction}
    splits = PreferenceSplits(
        train=[pair for pair in pairs if pair["id"] not in held], eval=[pair for pair in pairs if pair["id"] in held]
    )
    splits.manifest = {
        "task": "preference",
        "prompts": len(items),
        "pairs": len(pairs),
        "counts": {"train": len(splits.train), "eval": len(splits.eval)},
        "pairs_by_prompt_kind": dict(kinds),
        "chosen": {name: outcomes[name] for name in ("chosen_correct", "chosen_unknown")},
        "skipped": {name: outcomes[name] for name in ("all_correct", "correct_or_refused", "all_refused")},
        "rejected_reasons": {"incorrect": len(pairs)},
        "samples_per_prompt": samples,
        "seed": seed,
    }
    return splits


def preference_info_entry(file_name: str, *, format: str = "sharegpt") -> dict[str, Any]:
    """LLaMA-Factory's ``dataset_info.json`` entry of a preference file (``ranking: true``)."""
    entry = dataset_info_entry(file_name, format=format)
    columns = dict(entry["columns"])
    if format == "alpaca":
        columns.pop("response", None)
        columns.pop("history", None)
    return {**entry, "ranking": True, "columns": {**columns, "chosen": "chosen", "rejected": "rejected"}}


def to_preference_row(example: Mapping[str, Any], *, format: str) -> dict[str, Any]:
    """The file row of a preference example in ``format`` (ShareGPT: as is; Alpaca: prompt columns plus the two
    replies as text)."""
    if format == "sharegpt":
        return dict(example)
    turns = [*example["conversations"], example["chosen"]]
    row = to_alpaca(Example(id=example["id"], task=example["task"], conversations=turns, meta=example["meta"]))
    del row["output"]
    return {**row, "chosen": example["chosen"]["value"], "rejected": example["rejected"]["value"]}


def write_preference_splits(
    splits: PreferenceSplits, directory: str | Path, *, format: str = "sharegpt", name: str = "zhrag",
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write the train and (when not empty) eval pairs, their ``dataset_info.json`` entries and the manifest
    (``extra`` added to it); returns the paths written."""
    if format not in ("sharegpt", "alpaca"):
        raise ConfigError(f"unknown format {format!r}; use sharegpt or alpaca")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    entries = {}
    for split, rows in (("train", splits.train), ("eval", splits.eval)):
        if rows:
            path = directory / f"{name}_{split}.jsonl"
            path.write_text(
                "".join(json.dumps(to_preference_row(row, format=format), ensure_ascii=False) + "\n" for row in rows),
                encoding="utf-8",
            )
            written[split] = path
            entries[f"{name}_{split}"] = preference_info_entry(path.name, format=format)
    written["dataset_info"] = write_dataset_info(directory, entries)
    written["manifest"] = directory / f"{name}_manifest.json"
    manifest = {"format": format, **splits.manifest, **(extra or {})}
    written["manifest"].write_text(json.dumps(manifest, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return written


@dataclass(frozen=True)
class PreferencePair:
    """One training pair as DPO reads it: the prompt turns and the two replies."""

    id: str
    turns: tuple[Turn, ...]
    chosen: str
    rejected: str


def load_preference_pairs(data: str | Path) -> tuple[Path, list[PreferencePair]]:
    """The pairs of a preference file (ShareGPT or Alpaca rows with ``chosen`` / ``rejected``) or of the training
    file of a ``build-data --task preference`` folder (the ``*_train`` entry with ``ranking: true``).

    Raises:
        TrainingDataError: missing or malformed data, or no pair.
    """
    path = Path(data).expanduser()
    if path.is_dir():
        path = _ranking_train_file(path)
    elif not path.is_file():
        raise TrainingDataError(f"preference data not found: {path}")
    pairs = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                pairs.append(_pair(line, f"{path}:{number}"))
    if not pairs:
        raise TrainingDataError(f"{path}: no preference pairs")
    return path, pairs


def _ranking_train_file(directory: Path) -> Path:
    info_path = directory / DATASET_INFO_FILE
    try:
        info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
    except (OSError, json.JSONDecodeError) as error:
        raise TrainingDataError(f"{info_path}: unreadable ({error})") from None
    files = [
        entry.get("file_name") for key, entry in info.items()
        if key.endswith("_train") and isinstance(entry, dict) and entry.get("ranking")
    ]
    if len(files) != 1:
        raise TrainingDataError(
            f"{directory}: expected one *_train dataset with \"ranking\": true in {DATASET_INFO_FILE}, found "
            f"{len(files)} (build it with zhrag build-data --task preference)"
        )
    return directory / str(files[0])


def _pair(line: str, where: str) -> PreferencePair:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise TrainingDataError(f"{where}: not JSON ({error.msg})") from None
    if not isinstance(row, dict) or "chosen" not in row or "rejected" not in row:
        raise TrainingDataError(f"{where}: a preference row needs chosen and rejected")
    if "conversations" in row:
        turns = tuple(Turn({"from": str(t["from"]), "value": str(t["value"])}) for t in row["conversations"])
        chosen, rejected = (_reply(row[name]) for name in ("chosen", "rejected"))
    else:
        request = "\n".join(part for part in (row.get("instruction"), row.get("input")) if part)
        system = [Turn({"from": "system", "value": row["system"]})] if row.get("system") else []
        turns = (*system, Turn({"from": "human", "value": request}))
        chosen, rejected = str(row["chosen"]), str(row["rejected"])
    if not turns or turns[-1]["from"] != "human":
        raise TrainingDataError(f"{where}: the prompt turns must end with a human turn")
    return PreferencePair(str(row.get("id") or where), turns, chosen, rejected)


def _reply(value: Any) -> str:
    return str(value.get("value", "")) if isinstance(value, dict) else str(value)
