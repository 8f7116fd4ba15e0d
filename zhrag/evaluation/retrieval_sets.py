"""Query sets with known gold for the retrieval benchmark (``zhrag eval-retrieval``).

- ``rc``: the human-written reading-comprehension pairs over the shared KB; gold is the paragraph the
  question was written on (``passage_id``), so a hit is a retrieved chunk of that paragraph.
- ``rc-train`` / ``rc-heldout``: the same pairs split by paragraph as ``zhrag build-data`` and ``zhrag eval --data rc``
  split them (:func:`zhrag.rc_pairs.held_out_paragraphs`: 5 % of the paragraphs held out, seed 0). Retrieval
  settings are tuned on ``rc-train`` and reported on ``rc-heldout``.
- ``dev-verified``: the Chinese-SimpleQA dev questions whose answer the KB states (``data/dev_kb_answerable.json``:
  ids and paragraph ids only); a hit is a chunk of that paragraph. They were found by a lexical-overlap filter, then
  checked by hand: the 165 loosely covered questions whose answer's surroundings in a KB paragraph share the most
  IDF-weighted question terms (plus rarer-entity matches among the rest) were read, and 19 kept. The filter is
  retrieval-like, so the set favours questions that lexical retrieval finds.
- ``dev-covered``: every dev question the automatic criterion calls KB-covered
  (:class:`zhrag.evaluation.kb_coverage.KBCoverage`: a paragraph contains the gold answer and shares three
  content bigrams with the question); a hit is a chunk that mentions the gold answer. The criterion is
  loose: on the shared KB it selects 635 of 2,000 dev questions, and reading the 165 best-matching of them
  found only 19 whose paragraph states the asked fact, the rest holding the answer string by coincidence
  (a year or a country in an unrelated paragraph). Its recall is reported, but it measures how often the
  answer string happens to be retrieved, not whether retrieval finds the answer.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from zhrag import settings
from zhrag.errors import DatasetError
from zhrag.evaluation.datasets import load_questions
from zhrag.evaluation.kb_coverage import KBCoverage
from zhrag.kb.sources import iter_documents
from zhrag.rc_pairs import default_rc_source, held_out_paragraphs, load_rc_pairs

Match = Literal["passage", "answer"]
#: Names of the query sets ``load_query_sets`` knows.
SET_NAMES = ("rc", "rc-train", "rc-heldout", "dev-verified", "dev-covered")
VERIFIED_FILE = "dev_kb_answerable.json"


@dataclass(frozen=True)
class RetrievalQuery:
    """One benchmark question with its gold.

    Attributes:
        id: Question id.
        question: Question text.
        passage_ids: Ids of the KB documents (paragraphs) that answer it (``passage`` matching).
        answer: Gold answer string (``answer`` matching).
    """

    id: str
    question: str
    passage_ids: frozenset[str] = frozenset()
    answer: str = ""


@dataclass(frozen=True)
class QuerySet:
    """A named set of benchmark questions and how a retrieved chunk counts as a hit."""

    name: str
    match: Match
    queries: tuple[RetrievalQuery, ...]


def rc_set(
    path: str | Path | None = None, *, limit: int | None = None, seed: int = 0, split: str | None = None
) -> QuerySet:
    """The reading-comprehension pairs (a seeded sample of ``limit`` of them when given).

    ``split``: ``None`` all pairs, ``"heldout"`` the pairs of the held-out paragraphs, ``"train"`` the others.

    Raises:
        TrainingDataError: the pairs file is missing or malformed.
        KnowledgeBaseError: the KB (whose paragraphs define the split) cannot be read.
    """
    pairs = load_rc_pairs(path or default_rc_source())
    if split is not None:
        paragraphs = (document.id for document in iter_documents(settings.default_kb_source()))
        held_out = held_out_paragraphs(pairs, paragraphs)
        pairs = [pair for pair in pairs if (pair.passage_id in held_out) == (split == "heldout")]
    if limit is not None and limit < len(pairs):
        pairs = sorted(random.Random(seed).sample(pairs, limit), key=lambda pair: pair.id)
    queries = tuple(
        RetrievalQuery(id=pair.id, question=pair.question, passage_ids=frozenset({pair.passage_id}))
        for pair in pairs
        if pair.question
    )
    return QuerySet(name=f"rc-{split}" if split else "rc", match="passage", queries=queries)


def dev_verified_set(dataset: str | Path | None = None) -> QuerySet:
    """The hand-verified KB-answerable dev questions, read from ``dataset`` by id.

    Raises:
        DatasetError: the dataset lacks a listed id, or cannot be read.
    """
    listed = json.loads(resources.files("zhrag.evaluation").joinpath("data").joinpath(VERIFIED_FILE).read_text("utf-8"))
    by_id = {question.id: question for question in load_questions(dataset or settings.default_dataset())}
    missing = [item["id"] for item in listed["questions"] if item["id"] not in by_id]
    if missing:
        raise DatasetError(
            f"dataset {dataset or settings.default_dataset()} lacks {len(missing)} hand-verified question ids "
            f"(e.g. {missing[0]}): the dev-verified set needs the Chinese-SimpleQA dev file"
        )
    queries = tuple(
        RetrievalQuery(
            id=item["id"],
            question=by_id[item["id"]].question,
            passage_ids=frozenset({item["passage_id"]}),
            answer=by_id[item["id"]].answer,
        )
        for item in listed["questions"]
    )
    return QuerySet(name="dev-verified", match="passage", queries=queries)


def dev_covered_set(dataset: str | Path | None = None, kb_sources: list[str | Path] | None = None) -> QuerySet:
    """Dev questions the automatic criterion calls KB-covered (see the module docstring for its limits).

    Raises:
        DatasetError / KnowledgeBaseError: unreadable dataset or KB source.
    """
    coverage = KBCoverage(kb_sources or [settings.default_kb_source()])
    queries = tuple(
        RetrievalQuery(id=question.id, question=question.question, answer=question.answer)
        for question in load_questions(dataset or settings.default_dataset())
        if coverage.covers(question.question, question.answer)
    )
    return QuerySet(name="dev-covered", match="answer", queries=queries)


def load_query_sets(
    names: list[str],
    *,
    rc_path: str | Path | None = None,
    rc_limit: int | None = None,
    dataset: str | Path | None = None,
    kb_sources: list[str | Path] | None = None,
    seed: int = 0,
) -> list[QuerySet]:
    """The query sets named in ``names`` (any of :data:`SET_NAMES`).

    Raises:
        DatasetError: an unknown set name or an empty set.
    """
    unknown = [name for name in names if name not in SET_NAMES]
    if unknown:
        raise DatasetError(f"unknown retrieval set {unknown[0]!r}: choose from {', '.join(SET_NAMES)}")
    sets = []
    for name in names:
        if name.startswith("rc"):
            split = name.removeprefix("rc").removeprefix("-") or None
            query_set = rc_set(rc_path, limit=rc_limit, seed=seed, split=split)
        elif name == "dev-verified":
            query_set = dev_verified_set(dataset)
        else:
            query_set = dev_covered_set(dataset, kb_sources)
        if not query_set.queries:
            raise DatasetError(f"retrieval set {name!r} is empty")
        sets.append(query_set)
    return sets
