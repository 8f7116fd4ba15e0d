"""The evaluation judge of a run, built from its evaluation settings and context: who grades answers and scores
RAGAS metrics.

Two kinds, chosen by the evaluation settings (:class:`~zhrag.evaluation.eval_settings.EvalSettings`) and the
run context:

- an OpenAI-compatible endpoint (``eval_base_url`` + ``eval_api_model``; vLLM, llama.cpp server,
  Ollama, ...), the key read from ``OPENAI_API_KEY``; without ``eval_model``, the answer model's
  endpoint (``model_base_url``) when it has one;
- otherwise a local model: ``eval_model``, or the answer model ``model`` without its adapter,
  loaded once per process by ``zhrag.models.load_llm``.

The same judge serves the official grader (``grading_judge``) and RAGAS (``ragas_judge``). The
embedder of RAGAS answer similarity is ``eval_embedder``. ``check_evaluation_setup`` builds all a
run needs up front, so an unreachable endpoint or a missing model fails before the first question.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from langchain_core.language_models.llms import LLM as LangChainLLM  # noqa: N811 - zhrag's own LLM is the protocol
from langchain_core.messages import HumanMessage, SystemMessage
from pydantic import ConfigDict

from zhrag.errors import ModelLoadError
from zhrag.evaluation.eval_settings import EvalSettings
from zhrag.evaluation.official_grader import (
    Judge,
    OpenAICompatibleJudge,
    openai_compatible_judge,
)
from zhrag.evaluation.ragas_metrics import (
    RAGAS_METRICS,
    ragas_embeddings,
    ragas_llm,
    require_ragas,
)
from zhrag.graph.context import Context
from zhrag.kb.embeddings import resolve_embedder
from zhrag.models import LLM, load_llm
from zhrag.prompts.grader import GRADER_SYSTEM_PROMPT

if TYPE_CHECKING:
    from ragas.embeddings import BaseRagasEmbeddings
    from ragas.llms import BaseRagasLLM

logger = logging.getLogger(__name__)

#: Generation budget of the local judge for the official grader (it answers one letter).
GRADE_MAX_NEW_TOKENS = 8
#: Generation budget of the local judge per RAGAS call (JSON statements and verdicts of a short answer).
RAGAS_MAX_NEW_TOKENS = 256
#: Seconds to wait for one endpoint reply.
ENDPOINT_TIMEOUT_S = 120.0
#: Attempts per RAGAS call to an endpoint (network errors are retried; a local model is not).
ENDPOINT_ATTEMPTS = 3


class LocalLLMAdapter(LangChainLLM):
    """A ``LLM`` as a LangChain text LLM, for RAGAS: greedy, long outputs, no newline stop.

    Chat models get the prompt as one user message (``LLM.generate`` does that for strings).
    """

    local: Any
    max_new_tokens: int = RAGAS_MAX_NEW_TOKENS
    model_config = ConfigDict(arbitrary_types_allowed=True)

    @property
    def _llm_type(self) -> str:
        return "zhrag-local"

    def _call(self, prompt: str, stop: list[str] | None = None, run_manager: Any = None, **kwargs: Any) -> str:
        [text] = self.local.generate([prompt], max_new_tokens=self.max_new_tokens, stop=tuple(stop or ()))
        return text


def eval_endpoint(context: Context, evaluation: EvalSettings) -> tuple[str, str] | None:
    """(base URL, model name) of the endpoint serving the evaluation judge, or ``None`` for a local model.

    ``eval_base_url`` with ``eval_api_model``; else, without ``eval_model``, the answer model's
    endpoint (``model_base_url`` serving ``model``).
    """
    if evaluation.eval_base_url and evaluation.eval_api_model:
        return evaluation.eval_base_url, evaluation.eval_api_model
    if context.model_base_url and evaluation.eval_model is None:
        return context.model_base_url, context.model
    return None


def eval_llm(context: Context, evaluation: EvalSettings) -> LLM:
    """The local evaluation model: ``evaluation.eval_model``, else ``context.model`` without adapter."""
    return load_llm(evaluation.eval_model or context.model, device=context.device, dtype=context.dtype)


@lru_cache(maxsize=8)
def _endpoint_judge(base_url: str, model: str) -> OpenAICompatibleJudge:
    return openai_compatible_judge(base_url, model, timeout=ENDPOINT_TIMEOUT_S)


def grading_judge(context: Context, evaluation: EvalSettings) -> Judge:
    """The judge callable (prompt → reply) for the official grader.

    A local chat model gets the official system message and the grading prompt as the user
    message; a base model gets both as one completion prompt.
    """
    endpoint = eval_endpoint(context, evaluation)
    if endpoint:
        return _endpoint_judge(*endpoint)
    llm = eval_llm(context, evaluation)

    def judge(prompt: str) -> str:
        message: Any = (
            [SystemMessage(GRADER_SYSTEM_PROMPT), HumanMessage(prompt)]
            if llm.is_chat
            else f"{GRADER_SYSTEM_PROMPT}\n\n{prompt}\n"
        )
        [reply] = llm.generate([message], max_new_tokens=GRADE_MAX_NEW_TOKENS, stop=())
        return reply

    return judge


@lru_cache(maxsize=8)
def _endpoint_ragas_llm(base_url: str, model: str) -> BaseRagasLLM:
    from langchain_openai import ChatOpenAI  # installed with ragas
    from pydantic import SecretStr

    chat = ChatOpenAI(
        base_url=base_url,
        model=model,
        api_key=SecretStr(os.environ.get("OPENAI_API_KEY") or "unused"),
        temperature=0,
        timeout=ENDPOINT_TIMEOUT_S,
        max_retries=0,
    )
    return ragas_llm(chat, max_retries=ENDPOINT_ATTEMPTS)


@lru_cache(maxsize=8)
def _local_ragas_llm(llm: LLM) -> BaseRagasLLM:
    return ragas_llm(LocalLLMAdapter(local=llm))


def ragas_judge(context: Context, evaluation: EvalSettings) -> BaseRagasLLM:
    """The RAGAS judge of the run (built once per process per judge)."""
    endpoint = eval_endpoint(context, evaluation)
    if endpoint:
        return _endpoint_ragas_llm(*endpoint)
    return _local_ragas_llm(eval_llm(context, evaluation))  # type: ignore[arg-type]  # engines hash by identity


@lru_cache(maxsize=4)
def _ragas_embedder(name: str, device: str | None) -> BaseRagasEmbeddings:
    from langchain_huggingface import HuggingFaceEmbeddings  # loads sentence-transformers

    model_kwargs = {"device": device} if device else {}
    try:
        embeddings = HuggingFaceEmbeddings(model_name=resolve_embedder(name), model_kwargs=model_kwargs)
    except Exception as error:  # the hub, tokenizers and torch raise many unrelated types
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelLoadError(f"cannot load evaluation embedder {name!r}: {first_line}") from error
    return ragas_embeddings(embeddings)


def ragas_embedder(context: Context, evaluation: EvalSettings) -> BaseRagasEmbeddings:
    """The sentence-transformers embedder of RAGAS answer similarity (``evaluation.eval_embedder``), loaded once."""
    return _ragas_embedder(evaluation.eval_embedder, context.device)


def check_evaluation_setup(context: Context, evaluation: EvalSettings, metrics: Sequence[str]) -> None:
    """Build what ``metrics`` need before a run, so problems surface before the first question.

    Checks that ragas imports (RAGAS metrics), that the endpoint answers and serves the model, or
    that the local evaluation model loads (official grader or RAGAS), and that the evaluation
    embedder loads (``answer_correctness``).

    Raises:
        ConfigError: ragas is not installed.
        JudgeError: the endpoint is unreachable or does not serve ``eval_api_model``.
        ModelLoadError: the local evaluation model or the embedder cannot be loaded.
    """
    wants_ragas = any(name in RAGAS_METRICS for name in metrics)
    if wants_ragas:
        require_ragas()
    if wants_ragas or ("grade" in metrics and evaluation.grader == "official"):
        endpoint = eval_endpoint(context, evaluation)
        if endpoint:
            _endpoint_judge(*endpoint).check()
        elif not eval_llm(context, evaluation).is_chat and wants_ragas:  # eval_llm loads the model (once per process)
            logger.warning(
                "the RAGAS judge %r is a base model without a chat template: expect unparsable replies "
                "(scores recorded as missing) and slow runs; an instruction-tuned model or an endpoint works better",
                evaluation.eval_model or context.model,
            )
    if "answer_correctness" in metrics:
        ragas_embedder(context, evaluation)
