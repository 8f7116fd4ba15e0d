"""``load_endpoint_llm``: a chat model served by an OpenAI-compatible endpoint (vLLM, SGLang, llama.cpp, TGI).

The served model is a chat :class:`EndpointLLM` (an :class:`~zhrag.models.base.LLM`), so the graph nodes build chat
messages for it and call the same ``generate`` as for in-process models. Requests go through LangChain's OpenAI
chat client (``langchain-openai``, the ``serve`` extra): greedy (temperature 0), ``max_new_tokens`` sent as
``max_tokens``, the prompts of one ``generate`` call sent concurrently so the server can batch them.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from typing import Any

import httpx

from zhrag.errors import ConfigError, ModelEndpointError
from zhrag.models.base import LLMBase, Prompt, ScoredText, candidate_probabilities, scored_from_logprobs
from zhrag.models.failures import first_line

#: Seconds to wait for one reply (long answers on a busy server) and for the reachability check.
REQUEST_TIMEOUT_S = 120.0
CHECK_TIMEOUT_S = 10.0
#: Requests in flight at once: per ``generate`` call, and the evaluation runner's default concurrency.
MAX_CONCURRENCY = 16
#: Environment variable holding the endpoint's API key by default.
DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"

#: Alternatives asked for at the judge's one-token reply.
TOP_LOGPROBS = 20

_lock = threading.Lock()
_llms: dict[tuple[str, str, str], EndpointLLM] = {}


def _logprob_entries(output: Any) -> list[dict[str, Any]]:
    """The per-token log-probability entries of a chat reply (OpenAI ``logprobs.content``), or none."""
    logprobs = (getattr(output, "response_metadata", None) or {}).get("logprobs") or {}
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    return [entry for entry in content or [] if isinstance(entry, dict)]


class EndpointLLM(LLMBase):
    """A chat model served by an OpenAI-compatible endpoint.

    Attributes:
        model: The LangChain OpenAI chat client of the endpoint.
        base_url: Endpoint root, the part before ``/chat/completions``.
    """

    def __init__(self, model: Any, *, base_url: str, load_info: dict[str, Any]) -> None:
        super().__init__(is_chat=True, load_info=load_info)
        self.model = model
        self.base_url = base_url

    @property
    def batch_size(self) -> int:
        """Requests sent to the server at once (by one ``generate`` call, or by concurrent callers); the server batches them."""
        return MAX_CONCURRENCY

    @property
    def default_concurrency(self) -> int:
        """Questions an evaluation runs at once by default: enough requests in flight for the server to batch."""
        return MAX_CONCURRENCY

    @property
    def supports_logprobs(self) -> bool:
        """Asked for (OpenAI ``logprobs``); a server that returns none gives no confidence and a text verdict."""
        return True

    def _send(self, inputs: list[Any], stops: list[str], max_new_tokens: int, **logprobs: Any) -> list[Any]:
        """Send ``inputs`` concurrently; endpoint failures become :class:`ModelEndpointError`."""
        import openai

        model = self.model.bind(**logprobs) if logprobs else self.model
        try:
            return model.batch(
                inputs, config={"max_concurrency": MAX_CONCURRENCY}, stop=stops or None, max_tokens=max_new_tokens
            )
        except openai.APIStatusError as error:
            raise ModelEndpointError(
                f"model endpoint {self.base_url} answered HTTP {error.status_code}: {first_line(error)}"
            ) from None
        except openai.APIError as error:
            raise ModelEndpointError(f"model endpoint {self.base_url} failed: {first_line(error)}") from None

    def _complete(self, inputs: list[Any], stops: list[str], max_new_tokens: int) -> list[str]:
        return [output.text for output in self._send(inputs, stops, max_new_tokens)]

    def generate_scored(
        self, prompts: Sequence[Prompt], max_new_tokens: int = 32, stop: Sequence[str] = ("\n",)
    ) -> list[ScoredText]:
        """Completions with the token log-probabilities the server returns (none: no tokens, no confidence)."""
        self._check_prompts(prompts, max_new_tokens)
        stops = [s for s in stop if s]
        inputs = [prompt if isinstance(prompt, str) else list(prompt) for prompt in prompts]
        return [
            scored_from_logprobs(output.text, _logprob_entries(output), stops)
            for output in self._send(inputs, stops, max_new_tokens, logprobs=True)
        ]

    def next_token_probabilities(self, prompts: Sequence[Prompt], candidates: Sequence[str]) -> list[dict[str, float]]:
        """Candidate probabilities from the first token's ``top_logprobs``; without them, 1.0 for the candidate the
        one-token reply starts with."""
        self._check_prompts(prompts, 1)
        inputs = [prompt if isinstance(prompt, str) else list(prompt) for prompt in prompts]
        results = []
        for output in self._send(inputs, [], 1, logprobs=True, top_logprobs=TOP_LOGPROBS):
            entries = _logprob_entries(output)
            probabilities = candidate_probabilities(entries, candidates)
            if not entries:
                reply = output.text.strip()
                for candidate in candidates:
                    if reply.startswith(candidate):
                        probabilities[candidate] = 1.0
                        break
            results.append(probabilities)
        return results


def load_endpoint_llm(base_url: str, model: str, *, api_key_env: str = DEFAULT_API_KEY_ENV) -> EndpointLLM:
    """The chat model ``model`` served at ``base_url`` (e.g. ``http://localhost:8000/v1``), built once per process.

    The endpoint is checked on first use: it must answer ``GET {base_url}/models`` and, when it
    lists models, list ``model``.

    Args:
        base_url: Endpoint root, the part before ``/chat/completions``.
        model: Model name the server serves (vLLM: ``--served-model-name`` or the model path).
        api_key_env: Environment variable with the API key; unset sends a placeholder key
            (local servers ignore it).

    Raises:
        ConfigError: ``base_url`` is not an http(s) URL, ``model`` is empty, or ``langchain-openai`` is missing.
        ModelEndpointError: the endpoint is unreachable, answers an error, or does not serve ``model``.
    """
    url = base_url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"model endpoint URL must start with http:// or https://, got {base_url!r}")
    if not model.strip():
        raise ConfigError(f"no model name given for the model endpoint {url}")
    key = (url, model, api_key_env)
    with _lock:
        if key not in _llms:
            _llms[key] = _connect(url, model, os.environ.get(api_key_env))
        return _llms[key]


def endpoint_models() -> list[EndpointLLM]:
    """The endpoint models :func:`load_endpoint_llm` has built in this process, in order."""
    with _lock:
        return list(_llms.values())


def _connect(url: str, model: str, api_key: str | None) -> EndpointLLM:
    """Check the endpoint and build its LangChain chat client."""
    try:
        # The base class, not ChatOpenAI: ChatOpenAI renames max_tokens to max_completion_tokens,
        # which OpenAI-compatible servers such as llama.cpp's and TGI do not read.
        from langchain_openai.chat_models.base import BaseChatOpenAI
        from pydantic import SecretStr
    except ImportError:
        raise ConfigError("model endpoints need langchain-openai: pip install 'zhrag[serve]'") from None
    start = time.perf_counter()
    served = _served_models(url, api_key)
    if served and model not in served:
        raise ModelEndpointError(f"model endpoint {url} does not serve model {model!r}; it serves {served}")
    chat = BaseChatOpenAI(
        base_url=url,
        model=model,
        api_key=SecretStr(api_key or "unused"),
        temperature=0,
        timeout=REQUEST_TIMEOUT_S,
        max_retries=1,
    )
    info = {"model": model, "kind": "endpoint", "source": url, "cache_hit": None, "shared_base": False,
            "load_s": round(time.perf_counter() - start, 3), "device": None, "dtype": None, "adapter": None}
    return EndpointLLM(chat, base_url=url, load_info=info)


def _served_models(url: str, api_key: str | None) -> Sequence[str]:
    """The model ids listed by ``GET {url}/models``; raises ``ModelEndpointError`` when that fails."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.get(f"{url}/models", headers=headers, timeout=CHECK_TIMEOUT_S)
    except httpx.HTTPError as error:
        raise ModelEndpointError(f"model endpoint {url} unreachable: {type(error).__name__}: {error}") from None
    if response.is_error:
        raise ModelEndpointError(f"model endpoint {url} answered HTTP {response.status_code} to GET /models")
    try:
        listing = response.json()
    except ValueError:
        raise ModelEndpointError(f"model endpoint {url} did not answer JSON to GET /models") from None
    entries = listing.get("data", []) if isinstance(listing, dict) else []
    return [entry["id"] for entry in entries if isinstance(entry, dict) and isinstance(entry.get("id"), str)]
