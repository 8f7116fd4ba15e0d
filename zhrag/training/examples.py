"""Supervised fine-tuning examples for the answer and judge nodes, in the prompts the graph itself sends.

Every example is a ShareGPT-style record::

    {"id": "...", "task": "answer" | "judge",
     "conversations": [{"from": "system" | "human" | "gpt" | "tool", "value": "..."}, ...],
     "meta": {...}}

For base models (``chat=False``) the human turn is the whole few-shot completion text the node builds and the
gpt turn is the target; for chat models the system and human turns are the node's chat messages.

Two sources:

- the human-written reading-comprehension pairs over the knowledge base (``build_rc_examples``; pairs read by
  :mod:`zhrag.rc_pairs`): the pair's own passage (the knowledge-base chunk holding the answer) is placed at a
  seeded random position among distractor passages for the answer prompt, and is the 是 example of the judge;
  a distractor without the answer is its 否 example. All questions of a held-out passage go to the evaluation split.
- a Chinese-SimpleQA style question set plus retrieved passages (``build_qa_examples``): the answer target is
  the gold answer, judge labels come from a relevance rule (the CLI passes
  ``zhrag.evaluation.retrieval_metrics.kb_covered``: the passage contains the normalised gold answer and shares
  content with the question); judge classes are balanced by down-sampling. By default the first
  ``QA_EXCLUDED_FIRST`` questions, the slice that ``--limit`` evaluation runs take, are kept out entirely.

Distractors come from a ``retrieve(question, k)`` callable: the graph's own retrieval in real use, or the
offline :class:`LexicalRetriever` (character-bigram overlap over the knowledge-base chunks).
Every random choice is seeded per record, so the output does not depend on the order or subset of the input.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypedDict

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from typing_extensions import NotRequired  # typing has it from Python 3.11 on

from zhrag import settings
from zhrag.errors import TrainingDataError
from zhrag.kb.chunking import chunk_document
from zhrag.kb.evidence import query_bigrams, with_evidence
from zhrag.kb.passage import Passage
from zhrag.kb.sources import Document, iter_documents
from zhrag.prompts import Prompt, build_answer_prompt, build_judge_prompt, normalize_text
from zhrag.prompts.answer import ANSWER_PASSAGE_CHARS
from zhrag.prompts.common import format_passage
from zhrag.prompts.judge import JUDGE_PASSAGE_CHARS, NO, YES
from zhrag.rc_pairs import HELD_OUT_FRACTION, RCPair, held_out_groups

Task = Literal["answer", "judge"]
#: Speaker tags of a turn (LLaMA-Factory's ShareGPT defaults, with ``tool`` for tool results).
ROLES = ("system", "human", "gpt", "function_call", "tool")
#: Speakers whose turns are learned: the assistant's replies and its tool calls (``{"name", "arguments"}`` JSON).
LEARNED_ROLES = ("gpt", "function_call")
#: Passages in an answer prompt, the graph's default ``top_k``.
DEFAULT_PASSAGES = 3
#: Share of passages (RC) or questions (QA) whose examples form the evaluation split.
DEFAULT_EVAL_FRACTION = HELD_OUT_FRACTION
#: Leading questions of a QA file kept out of the examples: evaluation runs with ``--limit N`` take the
#: first N questions (the recorded dev run used 300).
QA_EXCLUDED_FIRST = 500
#: Extra passages requested from ``retrieve`` so that enough distractors survive filtering.
_EXTRA_CANDIDATES = 5
#: Characters of a passage that both prompts show; the answer must lie inside them.
_VISIBLE_CHARS = min(ANSWER_PASSAGE_CHARS, JUDGE_PASSAGE_CHARS)

Turn = TypedDict("Turn", {"from": str, "value": str})


class Example(TypedDict):
    """One fine-tuning example: an id, its task, the ShareGPT turns and free-form metadata; tool-use examples add
    ``tools`` (a JSON string of OpenAI function specs, as LLaMA-Factory's ShareGPT ``tools`` column)."""

    id: str
    task: str
    conversations: list[Turn]
    meta: dict[str, Any]
    tools: NotRequired[str]


#: ``retrieve(question, k) -> passages``, best first (the graph's retrieval, or :class:`LexicalRetriever`).
Retriever = Callable[[str, int], Sequence[Passage]]
#: ``relevant(question, gold, passages) -> bool``: whether the passages answer the question
#: (``zhrag.evaluation.retrieval_metrics.kb_covered`` has this signature).
RelevanceRule = Callable[[str, str, Sequence[Passage]], bool]


class QAItem(Protocol):
    """A benchmark question (``zhrag.evaluation.datasets.Question`` fits)."""

    @property
    def id(self) -> str: ...
    @property
    def question(self) -> str: ...
    @property
    def answer(self) -> str: ...


@dataclass
class ExampleSplits:
    """Examples split for training and evaluation, with what was held out or skipped.

    Attributes:
        train: Training examples.
        eval: Evaluation examples (every example of a held-out passage or question).
        eval_groups: Passage ids (RC) or question ids (QA) whose examples are all in ``eval``.
        excluded_ids: Question ids that produced no example at all (the evaluation's dev slice).
        skipped: Reason → number of questions (or judge examples) left out.
    """

    train: list[Example] = field(default_factory=list)
    eval: list[Example] = field(default_factory=list)
    eval_groups: list[str] = field(default_factory=list)
    excluded_ids: list[str] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)


def check_conversation(turns: Any) -> list[Turn]:
    """Validate ShareGPT turns: known speakers, text values, a system or human first, at least one gpt turn.

    Raises:
        TrainingDataError: naming the first problem.
    """
    if not isinstance(turns, Sequence) or isinstance(turns, str) or not turns:
        raise TrainingDataError("conversation must be a non-empty list of turns")
    for number, turn in enumerate(turns, start=1):
        if not isinstance(turn, dict) or not {"from", "value"} <= turn.keys():
            raise TrainingDataError(f"turn {number} must be an object with 'from' and 'value'")
        if turn["from"] not in ROLES:
            raise TrainingDataError(f"turn {number} has unknown speaker {turn['from']!r}; use one of {list(ROLES)}")
        if not isinstance(turn["value"], str):
            raise TrainingDataError(f"turn {number} value is not a string")
    if turns[0]["from"] not in ("system", "human"):
        raise TrainingDataError(f"conversation starts with a {turns[0]['from']!r} turn; start with system or human")
    if not any(turn["from"] in LEARNED_ROLES for turn in turns):
        raise TrainingDataError("conversation has no gpt (assistant) or function_call turn to learn")
    return list(turns)


def load_documents(path: str | Path | None = None) -> dict[str, Document]:
    """Knowledge-base documents by id (default: ``settings.default_kb_source()``)."""
    return {doc.id: doc for doc in iter_documents(path if path is not None else settings.default_kb_source())}


def document_passages(document: Document) -> list[Passage]:
    """The chunks of a document as the knowledge base stores and returns them (ids ``<doc id>#<n>``)."""
    return [Passage(id=c.id, title=c.title, text=c.text, score=0.0) for c in chunk_document(document)]


class LexicalRetriever:
    """Offline retriever: ranks passages by the IDF-weighted character bigrams they share with the query.

    Cheap (no model, no index service), meant for picking distractor passages and for tests.
    """

    def __init__(self, passages: Iterable[Passage]) -> None:
        self._passages = list(passages)
        postings: dict[str, list[int]] = defaultdict(list)
        for index, passage in enumerate(self._passages):
            for bigram in _bigrams(f"{passage['title']}{passage['text']}"):
                postings[bigram].append(index)
        total = len(self._passages)
        self._postings = dict(postings)
        self._weights = {bigram: math.log(1 + total / len(ids)) for bigram, ids in postings.items()}

    @classmethod
    def from_documents(cls, documents: Iterable[Document]) -> LexicalRetriever:
        """A retriever over the chunks of ``documents``."""
        return cls(passage for document in documents for passage in document_passages(document))

    def __call__(self, query: str, k: int) -> list[Passage]:
        """The ``k`` best passages for ``query`` (ties keep corpus order), scored by shared bigram weight."""
        scores: defaultdict[int, float] = defaultdict(float)
        for bigram in sorted(_bigrams(query)):  # a fixed summation order: equal inputs give equal float scores
            for index in self._postings.get(bigram, ()):
                scores[index] += self._weights[bigram]
        best = sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:k]
        wanted = query_bigrams(query)
        return [with_evidence(wanted, Passage(**{**self._passages[index], "score": score})) for index, score in best]


def _bigrams(text: str) -> set[str]:
    key = normalize_text(text)
    return {key[i : i + 2] for i in range(len(key) - 1)}


def mentions(answer: str, text: str) -> bool:
    """Whether ``text`` contains ``answer`` after normalisation (NFKC, lower case, no spaces or punctuation)."""
    key = normalize_text(answer)
    return bool(key) and key in normalize_text(text)


def conversation(prompt: Prompt, target: str) -> list[Turn]:
    """ShareGPT turns of a node prompt (completion text or chat messages) followed by the target reply."""
    if isinstance(prompt, str):
        turns = [Turn({"from": "human", "value": prompt})]
    else:
        turns = [Turn({"from": _role(message), "value": _text(message)}) for message in prompt]
    return [*turns, Turn({"from": "gpt", "value": target})]


def prompt_from_turns(turns: Sequence[Turn], *, chat: bool) -> Prompt | None:
    """The node prompt that :func:`conversation` turned into ``turns`` (all turns before the target), or ``None``
    when the turns do not have the model's form: for chat models a system turn, then user / assistant turns
    alternating and ending with a user turn (earlier assistant turns are the prompt's example answers); for base
    models one human turn."""
    speakers = [turn["from"] for turn in turns]
    if not chat:
        return turns[0]["value"] if speakers == ["human"] else None
    expected = ["system", *(["human", "gpt"] * ((len(turns) - 2) // 2)), "human"]
    if len(turns) < 2 or speakers != expected:
        return None
    kinds = {"system": SystemMessage, "human": HumanMessage, "gpt": AIMessage}
    return [kinds[turn["from"]](turn["value"]) for turn in turns]


def example_prompt(example: Example, *, chat: bool) -> Prompt:
    """The node prompt of ``example`` (its turns before the final gpt turn), as :func:`prompt_from_turns` reads it.

    Raises:
        TrainingDataError: the turns do not have the form of the model's prompts (naming the example and its turns).
    """
    *turns, target = example["conversations"]
    prompt = prompt_from_turns(turns, chat=chat)
    if prompt is None or target["from"] != "gpt":
        speakers = [turn["from"] for turn in example["conversations"]]
        form = "chat (system, human, [gpt, human, ...] gpt)" if chat else "completion (human, gpt)"
        raise TrainingDataError(
            f"example {example['id']!r} has turns {speakers}; this model needs the {form} form "
            "(build the data with --model set to the model evaluated)"
        )
    return prompt


def _role(message: BaseMessage) -> str:
    roles = {"system": "system", "human": "human", "ai": "gpt", "tool": "tool"}
    if message.type not in roles:
        raise TrainingDataError(f"prompt message of type {message.type!r} has no ShareGPT role")
    return roles[message.type]


def _text(message: BaseMessage) -> str:
    if not isinstance(message.content, str):
        raise TrainingDataError("prompt message content is not plain text")
    return message.content


def build_rc_examples(
    pairs: Iterable[RCPair],
    documents: Mapping[str, Document],
    retrieve: Retriever,
    *,
    chat: bool,
    n_passages: int = DEFAULT_PASSAGES,
    eval_fraction: float = DEFAULT_EVAL_FRACTION,
    seed: int = 0,
) -> ExampleSplits:
    """Answer and judge examples from reading-comprehension pairs.

    Per pair: the gold passage is the first chunk of its paragraph whose evidence window for the question (what
    the prompts show) holds the first answer; distractors are retrieved passages from other paragraphs that mention none of the
    answers. The answer example puts the gold passage at a seeded random position among up to
    ``n_passages - 1`` distractors (target: the first answer); the judge gets one 是 example (gold passage)
    and one 否 example (a distractor), or neither when no distractor is left, so the classes stay balanced.
    Pairs with an empty question or no answer, whose paragraph is not in ``documents``, or whose answer is in
    no visible chunk are skipped and counted in ``skipped``.
    """
    if n_passages < 1:
        raise TrainingDataError(f"n_passages must be >= 1, got {n_passages}")
    pairs = list(pairs)
    held_out = held_out_groups((p.passage_id for p in pairs if p.passage_id in documents), eval_fraction, seed)
    splits = ExampleSplits(eval_groups=sorted(held_out))
    chunks: dict[str, list[Passage]] = {}
    for pair in pairs:
        document = documents.get(pair.passage_id)
        if not pair.question or not pair.answers:
            splits.skipped["empty_question_or_answer"] += 1
            continue
        if document is None:
            splits.skipped["passage_not_in_kb"] += 1
            continue
        if pair.passage_id not in chunks:
            chunks[pair.passage_id] = document_passages(document)
        wanted = query_bigrams(pair.question)
        shown = (with_evidence(wanted, chunk) for chunk in chunks[pair.passage_id])
        gold = next((c for c in shown if mentions(pair.answers[0], _visible(c))), None)
        if gold is None:
            splits.skipped["answer_not_visible"] += 1
            continue
        rng = random.Random(f"{seed}:{pair.id}")
        candidates = retrieve(pair.question, n_passages + _EXTRA_CANDIDATES)
        distractors = [
            p
            for p in candidates
            if document_id(p) != pair.passage_id and not any(mentions(a, _full(p)) for a in pair.answers)
        ][: n_passages - 1]
        split = "eval" if pair.passage_id in held_out else "train"
        base_meta = {
            "source": f"rc:{pair.source}" if pair.source else "rc",
            "question_id": pair.id,
            "passage_id": pair.passage_id,
            "split": split,
        }
        examples = [_rc_answer_example(pair, gold, distractors, rng, chat, base_meta)]
        if distractors:
            negative = rng.choice(distractors)
            examples += [
                _judge_example(f"{pair.id}/judge/yes", pair.question, gold, YES, chat, base_meta),
                _judge_example(f"{pair.id}/judge/no", pair.question, negative, NO, chat, base_meta),
            ]
        else:
            splits.skipped["judge_without_distractor"] += 1
        (splits.eval if split == "eval" else splits.train).extend(examples)
    return splits


def _rc_answer_example(
    pair: RCPair, gold: Passage, distractors: list[Passage], rng: random.Random, chat: bool, meta: dict[str, Any]
) -> Example:
    position = rng.randint(0, len(distractors))
    passages = [*distractors[:position], gold, *distractors[position:]]
    return Example(
        id=f"{pair.id}/answer",
        task="answer",
        conversations=conversation(build_answer_prompt(pair.question, passages, chat=chat), pair.answers[0]),
        meta={
            **meta,
            "passage_ids": [p["id"] for p in passages],
            "gold_position": position + 1,
            "answers": list(pair.answers),
        },
    )


def _judge_example(
    example_id: str, question: str, passage: Passage, verdict: str, chat: bool, meta: dict[str, Any]
) -> Example:
    return Example(
        id=example_id,
        task="judge",
        conversations=conversation(build_judge_prompt(question, passage, chat=chat), verdict),
        meta={**meta, "judged_passage_id": passage["id"], "relevant": verdict == YES},
    )


def build_qa_examples(
    questions: Iterable[QAItem],
    retrieve: Retriever,
    *,
    relevant: RelevanceRule,
    chat: bool,
    n_passages: int = DEFAULT_PASSAGES,
    exclude_first: int = QA_EXCLUDED_FIRST,
    exclude_ids: Iterable[str] = (),
    require_grounded: bool = True,
    eval_fraction: float = DEFAULT_EVAL_FRACTION,
    seed: int = 0,
) -> ExampleSplits:
    """Answer and judge examples from a question set and the passages ``retrieve`` returns for each question.

    The first ``exclude_first`` questions (in input order) and those in ``exclude_ids`` give no example and are
    listed in ``excluded_ids``. For each other question, ``retrieve(question, n_passages)`` gives the passages of
    the answer example (target: the gold answer); with ``require_grounded`` a question whose passages are not
    ``relevant`` gives no answer example (the model cannot read the answer there). Each passage gives a judge
    example labelled 是 when ``relevant(question, gold, [passage])``, else 否; the larger class is then
    down-sampled (seeded) to the size of the smaller one. A seeded ``eval_fraction`` of the questions goes to
    the evaluation split. Never pass the benchmark's hidden test questions.
    """
    if n_passages < 1:
        raise TrainingDataError(f"n_passages must be >= 1, got {n_passages}")
    if exclude_first < 0:
        raise TrainingDataError(f"exclude_first must be >= 0, got {exclude_first}")
    items = list(questions)
    excluded = {item.id for item in items[:exclude_first]} | set(exclude_ids)
    kept = [item for item in items if item.id not in excluded]
    held_out = held_out_groups((item.id for item in kept), eval_fraction, seed)
    splits = ExampleSplits(eval_groups=sorted(held_out), excluded_ids=[i.id for i in items if i.id in excluded])
    judged: dict[bool, list[Example]] = {True: [], False: []}
    for item in kept:
        passages = list(retrieve(item.question, n_passages))[:n_passages]
        split = "eval" if item.id in held_out else "train"
        meta = {"source": "qa", "question_id": item.id, "split": split}
        grounded = bool(passages) and relevant(item.question, item.answer, passages)
        if grounded or not require_grounded:
            prompt = build_answer_prompt(item.question, passages, chat=chat)
            answer_meta = {**meta, "passage_ids": [p["id"] for p in passages], "grounded": grounded}
            example = Example(
                id=f"{item.id}/answer", task="answer", conversations=conversation(prompt, item.answer), meta=answer_meta
            )
            (splits.eval if split == "eval" else splits.train).append(example)
        else:
            splits.skipped["answer_not_in_passages"] += 1
        for rank, passage in enumerate(passages, start=1):
            label = relevant(item.question, item.answer, [passage])
            judged[label].append(
                _judge_example(f"{item.id}/judge/{rank}", item.question, passage, YES if label else NO, chat, meta)
            )
    smaller = min(len(judged[True]), len(judged[False]))
    for label, examples in judged.items():
        chosen = sorted(random.Random(f"{seed}:balance:{label}").sample(range(len(examples)), smaller))
        splits.skipped["judge_balancing"] += len(examples) - smaller
        for example in (examples[index] for index in chosen):
            (splits.eval if example["meta"]["split"] == "eval" else splits.train).append(example)
    return splits


def _visible(passage: Passage) -> str:
    return format_passage(passage, _VISIBLE_CHARS)


def _full(passage: Passage) -> str:
    return f"{passage.get('title', '')}\n{passage.get('text', '')}"


def document_id(passage: Passage) -> str:
    """The id of the KB document a chunk comes from (chunk ids are ``<document id>#<n>``)."""
    return passage["id"].rsplit("#", 1)[0]
