"""Shared fixtures: the shared data folder and a small real knowledge base cut from the shared KB."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from zhrag import settings

#: The KB passage that answers the issue's acceptance question (《九命奇冤》 → 吴沃尧).
ANSWER_PASSAGE_ID = "cmrc2018-140"
KB_SUBSET_SIZE = 200


@pytest.fixture(scope="session", autouse=True)
def _private_embedding_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Tests (and the processes they start) share one embedding cache of their own, not the user's."""
    previous = os.environ.get("ZHRAG_EMBEDDING_CACHE")
    os.environ["ZHRAG_EMBEDDING_CACHE"] = str(tmp_path_factory.mktemp("embedding_cache") / "embeddings.sqlite")
    yield
    if previous is None:
        os.environ.pop("ZHRAG_EMBEDDING_CACHE", None)
    else:
        os.environ["ZHRAG_EMBEDDING_CACHE"] = previous


@pytest.fixture(scope="session")
def shared_kb() -> Path:
    """The shared KB passages file; tests that need it skip with a reason when it is absent."""
    path = settings.shared_data_dir() / "kb" / "passages.jsonl"
    if not path.is_file():
        pytest.skip(f"shared KB not found at {path}")
    return path


@pytest.fixture(scope="session")
def kb_subset(shared_kb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first passages of the shared KB (real Wikipedia text), always including the 九命奇冤 passage."""
    rows = []
    with shared_kb.open(encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            if len(rows) < KB_SUBSET_SIZE or row["id"] == ANSWER_PASSAGE_ID:
                rows.append(row)
            if len(rows) >= KB_SUBSET_SIZE and any(r["id"] == ANSWER_PASSAGE_ID for r in rows):
                break
    path = tmp_path_factory.mktemp("kb") / "kb_subset.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path
