"""RAGAS ``faithfulness`` and ``answer_correctness`` for one answer, never failing the run.

Uses the ragas 0.4 single-turn metrics (``Faithfulness``, ``AnswerCorrectness``) with LangChain
components: any LangChain LLM or chat model as the judge (``LangchainLLMWrapper``) and any LangChain
embeddings for the similarity part of answer correctness (``LangchainEmbeddingsWrapper``). The newer
``ragas.metrics.collections`` classes accept only instructor-based API clients, so they cannot run on
a local model.

- faithfulness: the judge splits the answer into statements and checks each against the passages;
  score = share of statements supported.
- answer_correctness: 0.75 × F1 of the answer's statements against the gold answer's statements
  (classified TP/FP/FN by the judge) + 0.25 × cosine similarity of the two texts' embeddings.
- string metrics (no judge, always computable offline): ``string_presence`` (RAGAS ``StringPresence``: 1 when
  the gold answer occurs in the answer) and ``string_similarity`` (RAGAS ``NonLLMStringSimilarity``:
  1 − normalised Levenshtein distance between answer and gold answer).

A score that cannot be computed (unparsable judge output, NaN, timeout, endpoint failure) comes back
as ``(None, reason)``. ragas usage tracking is switched off unless ``RAGAS_DO_NOT_TRACK`` is set.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import warnings
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from zhrag.errors import ConfigError

if TYPE_CHECKING:  # ragas pulls in pandas, datasets and langchain-community: imported only when scoring
    from langchain_core.embeddings import Embeddings
    from langchain_core.language_models import BaseLanguageModel
    from ragas.embeddings import BaseRagasEmbeddings
    from ragas.llms import BaseRagasLLM

os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")
# ragas logs every unparsable judge reply at ERROR level; the reason is kept with the score instead.
# A NullHandler keeps those lines off stderr unless the application configures logging itself.
logging.getLogger("ragas").addHandler(logging.NullHandler())

#: The RAGAS metrics this module computes with a judge model.
RAGAS_METRICS = ("faithfulness", "answer_correctness")
#: The judge-free RAGAS metrics of :func:`string_scores`.
STRING_METRICS = ("string_presence", "string_similarity")
#: Seconds one metric of one answer may take (all its judge calls together).
TIMEOUT_S = 300
#: A score that could not be computed: ``(None, reason)``; otherwise ``(value, None)``.
ScoreResult = tuple[float | None, str | None]

_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def require_ragas() -> None:
    """Raise ``ConfigError`` with the install command when ragas cannot be imported."""
    try:
        import ragas  # noqa: F401
    except ImportError as error:
        raise ConfigError(
            f"the RAGAS metrics need the 'ragas' package ({error}): pip install 'ragas==0.4.3' "
            "'langchain-community==0.3.31'"
        ) from None


def ragas_llm(model: BaseLanguageModel, *, max_retries: int = 1) -> BaseRagasLLM:
    """A LangChain LLM or chat model as the RAGAS judge.

    ``max_retries`` is how many times one judge call is tried when it raises (1: no retry, right for
    a local model whose failures repeat; more for a network endpoint).
    """
    require_ragas()
    from ragas.llms import LangchainLLMWrapper
    from ragas.run_config import RunConfig

    config = RunConfig(timeout=TIMEOUT_S, max_retries=max(1, max_retries), max_wait=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return LangchainLLMWrapper(model, run_config=config)


def ragas_embeddings(embeddings: Embeddings) -> BaseRagasEmbeddings:
    """LangChain embeddings for the semantic-similarity part of ``answer_correctness``."""
    require_ragas()
    from ragas.embeddings import LangchainEmbeddingsWrapper

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return LangchainEmbeddingsWrapper(embeddings)


def faithfulness(question: str, answer: str, contexts: Sequence[str], llm: BaseRagasLLM) -> ScoreResult:
    """Share of the answer's statements that the passages ``contexts`` support, judged by ``llm``."""
    from ragas.dataset_schema import SingleTurnSample

    sample = SingleTurnSample(user_input=question, response=answer, retrieved_contexts=list(contexts))
    return _score(_legacy_metric("Faithfulness")(llm=llm), sample, llm)


def answer_correctness(
    question: str, answer: str, gold: str, llm: BaseRagasLLM, embeddings: BaseRagasEmbeddings
) -> ScoreResult:
    """RAGAS answer correctness of ``answer`` against ``gold`` (statement F1 and embedding similarity)."""
    from ragas.dataset_schema import SingleTurnSample

    sample = SingleTurnSample(user_input=question, response=answer, reference=gold)
    return _score(_legacy_metric("AnswerCorrectness")(llm=llm, embeddings=embeddings), sample, llm)


def string_scores(answer: str, gold: str) -> dict[str, float | None]:
    """RAGAS's judge-free string metrics of ``answer`` against ``gold`` (see the module doc); never a judge call."""
    from ragas.dataset_schema import SingleTurnSample

    sample = SingleTurnSample(response=answer, reference=gold)
    scores: dict[str, float | None] = {}
    for name, class_name in zip(STRING_METRICS, ("StringPresence", "NonLLMStringSimilarity"), strict=True):
        value = _run(_legacy_metric(class_name)().single_turn_ascore(sample))
        scores[name] = float(value) if value is not None and math.isfinite(float(value)) else None
    return scores


def _legacy_metric(name: str) -> Any:
    """The ragas 0.4 single-turn metric class ``name`` (its import from ``ragas.metrics`` warns: deprecated)."""
    import ragas.metrics

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return getattr(ragas.metrics, name)


def _score(metric: Any, sample: Any, llm: BaseRagasLLM) -> ScoreResult:
    """Run one single-turn metric; any failure or non-finite value becomes ``(None, reason)``."""
    metric.init(llm.run_config)
    try:
        value = _run(metric.single_turn_ascore(sample, timeout=TIMEOUT_S))
    except asyncio.TimeoutError:
        return None, f"timed out after {TIMEOUT_S} s"
    except Exception as error:  # noqa: BLE001 - parser, judge and network errors all mean "no score"
        text = str(error).strip().splitlines()
        return None, f"{type(error).__name__}: {text[0][:300]}" if text else type(error).__name__
    if value is None or not math.isfinite(float(value)):
        return None, f"{metric.name} is undefined for this answer (the judge found no statements)"
    return float(value), None


def _run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coroutine`` on the module's one background event loop and wait for its result.

    One long-lived loop (rather than ``asyncio.run`` per answer) keeps async HTTP clients of an
    endpoint judge usable across answers, and works whether or not the caller runs a loop itself.
    """
    global _loop
    with _loop_lock:
        if _loop is None:
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="zhrag-ragas", daemon=True).start()
    return asyncio.run_coroutine_threadsafe(coroutine, _loop).result()
