"""The llama.cpp engine: GGUF models run in process through ``xllamacpp`` (a prebuilt llama.cpp wheel).

One :class:`LlamaCppRuntime` per GGUF file and settings holds the weights once and serves any number of
threads: llama.cpp's server loop gives each request one of ``n_parallel`` slots and decodes the active slots
together (continuous batching), so concurrent graph runs share one model without a Python-side batcher.
Chat models (a GGUF with ``tokenizer.chat_template``) get their messages formatted by that template inside
llama.cpp (jinja); base models get completion prompts.

Besides greedy text, the engine gives what the graph needs from the model's probabilities:

- :meth:`LlamaCppLLM.generate_scored`: the answer with the log-probability of each generated token
  (the answer node's confidence, for calibrated abstention);
- :meth:`LlamaCppLLM.next_token_probabilities`: the probability of given first tokens (是 / 否) after a prompt,
  from one forward pass (the A2 judge's score).

xllamacpp also listens on a loopback HTTP port (its OpenAI-compatible server); every runtime sets a random
API key, so only this process can use that port. Settings come from the environment where not given:
``ZHRAG_LLAMA_THREADS`` (default: all cores), ``ZHRAG_LLAMA_PARALLEL`` (slots, default 4),
``ZHRAG_LLAMA_CTX`` (context shared by the slots, default 8192), ``ZHRAG_LLAMA_GPU_LAYERS`` (layers offloaded
to a GPU when the wheel has a GPU backend; default all, 0 on ``device="cpu"``), ``ZHRAG_LLAMA_CACHE_MIB`` (RAM
for cached prompts, default 512).
"""

from __future__ import annotations

import logging
import mmap
import os
import secrets
import struct
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zhrag.errors import ConfigError, ModelLoadError
from zhrag.models.base import (
    LLMBase,
    Prompt,
    ScoredText,
    candidate_probabilities,
    chat_dicts,
    scored_from_logprobs,
    truncate_at_stop,
)
from zhrag.models.failures import first_line
from zhrag.models.tool_calls import ToolReply, arguments_object, call_prefill, parse_tool_calls, tool_call
from zhrag.settings import env_int

logger = logging.getLogger(__name__)

#: Defaults of the runtime settings (see the module doc for their environment variables).
DEFAULT_PARALLEL = 4
DEFAULT_CTX = 8192
#: RAM for llama.cpp's cache of finished prompts (llama.cpp's own default, 8 GiB, would grow a long evaluation's
#: memory by gigabytes; the prompt prefix a slot already holds is reused either way).
DEFAULT_CACHE_MIB = 512
#: Alternatives returned per position when probabilities are asked for (llama.cpp's limit is higher).
TOP_LOGPROBS = 20

@dataclass(frozen=True)
class LlamaCppSettings:
    """How a GGUF file is run: threads, parallel slots, context tokens (shared by the slots), GPU layers."""

    n_threads: int
    n_parallel: int
    n_ctx: int
    n_gpu_layers: int
    cache_ram_mib: int = 512

    @classmethod
    def from_env(cls, device: str | None = None) -> LlamaCppSettings:
        """Settings from the ``ZHRAG_LLAMA_*`` variables; ``device="cpu"`` keeps every layer on the CPU.

        Raises:
            ConfigError: a variable is not a positive integer (``ZHRAG_LLAMA_GPU_LAYERS``: -1 or more).
        """
        gpu_default = 0 if device == "cpu" else -1
        return cls(
            n_threads=env_int("ZHRAG_LLAMA_THREADS", os.cpu_count() or 1, minimum=1),
            n_parallel=env_int("ZHRAG_LLAMA_PARALLEL", DEFAULT_PARALLEL, minimum=1),
            n_ctx=env_int("ZHRAG_LLAMA_CTX", DEFAULT_CTX, minimum=256),
            n_gpu_layers=env_int("ZHRAG_LLAMA_GPU_LAYERS", gpu_default, minimum=-1),
            cache_ram_mib=env_int("ZHRAG_LLAMA_CACHE_MIB", DEFAULT_CACHE_MIB, minimum=0),
        )


def accelerators() -> list[str]:
    """Names of the non-CPU devices llama.cpp can use in this process (empty for the CPU-only wheel)."""
    import xllamacpp

    return [
        str(device.get("description") or device.get("name"))
        for device in xllamacpp.get_device_info()
        if str(device.get("name", "")).upper() != "CPU"
    ]


#: Byte sizes of the fixed-size GGUF metadata value types (by type id); 8 is a string, 9 an array.
_GGUF_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def gguf_chat_template(path: Path) -> str | None:
    """The chat template stored in a GGUF file's metadata, or ``None`` (a base model).

    Reads the metadata header only, stepping over the other values without decoding them (the tokenizer's
    vocabulary arrays made a full ``gguf.GGUFReader`` parse take 8 s for Gemma-3-270M).

    Raises:
        ModelLoadError: the file is not a readable GGUF file.
    """
    try:
        with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            if data[:4] != b"GGUF":
                raise ValueError("no GGUF magic number")
            version, _, count = struct.unpack_from("<IQQ", data, 4)
            if version < 2:
                raise ValueError(f"GGUF version {version} is not supported")
            offset = 24
            for _ in range(count):
                (length,) = struct.unpack_from("<Q", data, offset)
                key = bytes(data[offset + 8 : offset + 8 + length])
                (kind,) = struct.unpack_from("<I", data, offset + 8 + length)
                offset += 12 + length
                if key == b"tokenizer.chat_template" and kind == _GGUF_STRING:
                    (size,) = struct.unpack_from("<Q", data, offset)
                    return bytes(data[offset + 8 : offset + 8 + size]).decode("utf-8", errors="replace") or None
                offset = _skip_gguf_value(data, offset, kind)
    except (OSError, ValueError, struct.error) as error:
        raise ModelLoadError(f"cannot read GGUF file {path}: {first_line(error)}") from error
    return None


def _skip_gguf_value(data: Any, offset: int, kind: int) -> int:
    """The offset after the GGUF metadata value of type ``kind`` at ``offset``."""
    if kind in _GGUF_SIZES:
        return offset + _GGUF_SIZES[kind]
    if kind == _GGUF_STRING:
        return offset + 8 + struct.unpack_from("<Q", data, offset)[0]
    if kind != _GGUF_ARRAY:
        raise ValueError(f"unknown GGUF value type {kind}")
    item, items = struct.unpack_from("<IQ", data, offset)
    offset += 12
    if item in _GGUF_SIZES:
        return offset + items * _GGUF_SIZES[item]
    for _ in range(items):
        offset = _skip_gguf_value(data, offset, item)
    return offset


class LlamaCppRuntime:
    """One GGUF model loaded by llama.cpp, serving concurrent requests from any thread.

    Attributes:
        path: The GGUF file.
        settings: Threads, slots, context and GPU layers it runs with.
        is_chat: Whether the file has a chat template (requests are then chat messages).
        address: The loopback URL of xllamacpp's own OpenAI-compatible server (needs :attr:`api_key`).
        api_key: The random key that server requires.
    """

    def __init__(
        self,
        path: Path,
        settings: LlamaCppSettings,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        alias: str | None = None,
        lora: Path | None = None,
    ) -> None:
        """Load ``path`` (with the GGUF LoRA adapter ``lora`` applied at scale 1); its HTTP server listens on
        ``host:port`` (0: any free port) and requires ``api_key`` (default: a random one, so that only this process
        can use it), serving the model as ``alias``."""
        try:
            import xllamacpp
        except ImportError:
            raise ConfigError("the llama.cpp engine needs the xllamacpp package: pip install xllamacpp") from None
        self.path = path
        self.settings = settings
        #: The file's chat template (``None``: a base model).
        self.chat_template = gguf_chat_template(path)
        self.is_chat = self.chat_template is not None
        self.api_key = api_key if api_key is not None else secrets.token_urlsafe(24)
        params = xllamacpp.CommonParams()
        params.model.path = str(path)
        params.n_ctx = settings.n_ctx
        params.n_parallel = settings.n_parallel
        params.kv_unified = True  # every slot may use the whole context; short prompts leave room for long ones
        params.cpuparams.n_threads = settings.n_threads
        params.cpuparams_batch.n_threads = settings.n_threads
        params.n_gpu_layers = settings.n_gpu_layers
        params.cache_ram_mib = settings.cache_ram_mib
        params.warmup = False
        params.verbosity = -1
        params.api_keys = [self.api_key] if self.api_key else []
        params.hostnames = [host]
        params.port = port
        if alias:
            params.model_alias = {alias}
        if lora is not None:
            params.lora_adapters = [xllamacpp.CommonAdapterLoraInfo(str(lora), 1.0)]
        self.lora = lora
        try:
            self._server = xllamacpp.Server(params)
        except Exception as error:  # llama.cpp reports load failures as generic runtime errors
            raise ModelLoadError(f"llama.cpp cannot load {path}: {first_line(error)}") from error
        self.address = self._server.listening_address
        self.devices = accelerators() if settings.n_gpu_layers != 0 else []
        self._pool = ThreadPoolExecutor(max_workers=settings.n_parallel, thread_name_prefix="zhrag-llama")

    def request(self, body: dict[str, Any]) -> dict[str, Any]:
        """Run one chat (``messages`` in ``body``) or completion (``prompt``) request; returns its first choice.

        The choice carries llama.cpp's ``timings`` under ``"timings"``.

        Raises:
            ConfigError: llama.cpp refused the request (for example a prompt longer than the context).
        """
        body = {"temperature": 0.0, "seed": 0, **body}
        chat = "messages" in body
        response = self._server.handle_chat_completions(body) if chat else self._server.handle_completions(body)
        if not isinstance(response, dict) or "error" in response or not response.get("choices"):
            error = response.get("error") if isinstance(response, dict) else response
            message = error.get("message") if isinstance(error, dict) else str(error)
            raise ConfigError(f"llama.cpp refused the request for {self.path.name}: {message}")
        choice = dict(response["choices"][0])
        choice["timings"] = response.get("timings", {})
        return choice

    def map(self, bodies: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """:meth:`request` for every body, sent together so llama.cpp's slots decode them in one batch."""
        if len(bodies) == 1:
            return [self.request(bodies[0])]
        return list(self._pool.map(self.request, bodies))


def _token_logprobs(choice: dict[str, Any]) -> list[dict[str, Any]]:
    return list((choice.get("logprobs") or {}).get("content") or [])


def _text(choice: dict[str, Any]) -> str:
    if "message" in choice:
        return str(choice["message"].get("content") or "")
    return str(choice.get("text") or "")


class LlamaCppLLM(LLMBase):
    """A GGUF model on llama.cpp, in process (see the module doc).

    Attributes:
        runtime: The loaded model (shared by the models of the same file, settings and LoRA).
    """

    def __init__(self, runtime: LlamaCppRuntime, *, load_info: dict[str, Any]) -> None:
        super().__init__(is_chat=runtime.is_chat, load_info=load_info)
        self.runtime = runtime

    @property
    def supports_logprobs(self) -> bool:
        return True

    @property
    def batch_size(self) -> int:
        """Requests decoded together (llama.cpp's parallel slots)."""
        return self.runtime.settings.n_parallel

    @property
    def default_concurrency(self) -> int:
        """Questions an evaluation runs at once by default: one per slot on a GPU, one on the CPU.

        On a CPU, prefill is compute-bound, so parallel questions mostly interleave; see
        ``benchmarks/eval_throughput.py`` for the measurement.
        """
        return self.runtime.settings.n_parallel if self.runtime.devices else 1

    def _body(self, prompt: Any, max_new_tokens: int, stop: Sequence[str], **extra: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"max_tokens": max_new_tokens, **extra}
        if stop:
            body["stop"] = list(stop)
        if self.is_chat:
            body["messages"] = chat_dicts(prompt)
        else:
            body["prompt"] = prompt
            if "top_logprobs" in body:  # the completion endpoint ignores top_logprobs: it takes the count as logprobs
                body["logprobs"] = body.pop("top_logprobs")
        return body

    def _complete(self, inputs: list[Any], stops: list[str], max_new_tokens: int) -> list[str]:
        bodies = [self._body(prompt, max_new_tokens, stops) for prompt in inputs]
        return [_text(choice) for choice in self.runtime.map(bodies)]

    def generate_samples(
        self,
        prompts: Sequence[Prompt],
        n: int,
        *,
        temperature: float,
        seed: int,
        max_new_tokens: int = 32,
        stop: Sequence[str] = ("\n",),
    ) -> list[list[str]]:
        """``n`` sampled completions per prompt: the ``i``-th at ``temperature`` with llama.cpp's seed ``seed + i``."""
        self._check_sampling(prompts, n, temperature, max_new_tokens)
        stops = [s for s in stop if s]
        bodies = [
            self._body(prompt, max_new_tokens, stops, temperature=temperature, seed=seed + index)
            for prompt in prompts
            for index in range(n)
        ]
        texts = [truncate_at_stop(_text(choice), stops) for choice in self.runtime.map(bodies)]
        return [texts[start : start + n] for start in range(0, len(texts), n)]

    def generate_scored(
        self, prompts: Sequence[Prompt], max_new_tokens: int = 32, stop: Sequence[str] = ("\n",)
    ) -> list[ScoredText]:
        """Greedy completions with the log-probability of every generated token (stop strings excluded)."""
        self._check_prompts(prompts, max_new_tokens)
        stops = [s for s in stop if s]
        bodies = [self._body(prompt, max_new_tokens, stops, logprobs=True) for prompt in prompts]
        return [
            scored_from_logprobs(_text(choice), _token_logprobs(choice), stops) for choice in self.runtime.map(bodies)
        ]

    def call_tools(
        self,
        messages: Sequence[dict[str, Any]],
        tools: Sequence[dict[str, Any]],
        max_new_tokens: int = 128,
        tool_choice: str = "auto",
    ) -> ToolReply:
        """One assistant turn with ``tools`` formatted by the model's own chat template (llama.cpp's jinja); calls
        llama.cpp parses are well-formed; a call it could not parse is recovered from the text when possible.
        ``tool_choice="required"`` with one tool prefills the opening of a call to it (the model writes the
        arguments). A model without a chat template takes the ChatML text of :meth:`LLMBase.call_tools`."""
        if not self.is_chat:
            return super().call_tools(messages, tools, max_new_tokens, tool_choice)
        messages, prefix = list(messages), call_prefill(list(tools), tool_choice)
        if prefix:
            # Prefill the call's opening in the template's format; the model writes the arguments. (llama.cpp's
            # tool_choice="required" grammar costs minutes per call on a CPU.)
            messages.append({"role": "assistant", "content": prefix})
        body = {"messages": messages, "tools": list(tools), "max_tokens": max_new_tokens}
        try:
            message = self.runtime.request(body).get("message") or {}
        except RuntimeError as error:
            # llama.cpp's chat parser refuses output that does not fit the template's tool format ("does not match
            # the expected ... format"); the turn is generated again from the same template as plain text.
            logger.info("llama.cpp could not parse a tool turn (%s); reading it as text", first_line(error))
            message = {"content": self._tool_turn_as_text(messages, tools, max_new_tokens, bool(prefix))}
        content = str(message.get("content") or "").strip()
        if prefix and not message.get("tool_calls"):
            content = prefix + content
        parsed = [
            tool_call(call.get("function"), True, str(call.get("id") or f"call_{number}"))
            for number, call in enumerate(message.get("tool_calls") or [])
        ]
        calls = tuple(call for call in parsed if call is not None)
        return ToolReply(content=content, calls=calls or tuple(parse_tool_calls(content)))

    def _tool_turn_as_text(
        self, messages: list[dict[str, Any]], tools: Sequence[dict[str, Any]], max_new_tokens: int, prefilled: bool
    ) -> str:
        """The turn's text from a completion request on the chat template rendered here (transformers' jinja
        renderer), without llama.cpp's tool-call parser; a prefilled last assistant message is continued."""
        from transformers.utils.chat_template_utils import render_jinja_template

        plain = [
            {**message, "tool_calls": [
                {**call, "function": {**call["function"], "arguments": arguments_object(call["function"]["arguments"])}}
                for call in message["tool_calls"]]} if message.get("tool_calls") else message
            for message in messages
        ]
        rendered, _ = render_jinja_template(  # type: ignore[str-unpack]  # annotated str; returns a tuple
            [plain], tools=list(tools), chat_template=self.runtime.chat_template,
            add_generation_prompt=not prefilled, continue_final_message=prefilled,
        )
        return _text(self.runtime.request({"prompt": rendered[0], "max_tokens": max_new_tokens}))

    def next_token_probabilities(self, prompts: Sequence[Prompt], candidates: Sequence[str]) -> list[dict[str, float]]:
        """For each prompt, the probability that the next token is each candidate (whitespace around it ignored).

        One forward pass per prompt (a one-token request); the prompts run in parallel slots. A candidate
        outside the model's top alternatives gets probability 0.
        """
        self._check_prompts(prompts, 1)
        bodies = [self._body(prompt, 1, (), logprobs=True, top_logprobs=TOP_LOGPROBS) for prompt in prompts]
        return [candidate_probabilities(_token_logprobs(choice), candidates) for choice in self.runtime.map(bodies)]


_lock = threading.Lock()
_runtimes: dict[tuple[str, LlamaCppSettings, str | None], LlamaCppRuntime] = {}


def load_llamacpp(
    path: Path,
    *,
    model: str,
    kind: str,
    device: str | None,
    cache_hit: bool | None,
    adapter: str | None = None,
    lora: Path | None = None,
) -> LlamaCppLLM:
    """The llama.cpp model of the GGUF file ``path`` (with the GGUF LoRA ``lora``, converted from the PEFT adapter
    ``adapter``), loaded once per process, settings and adapter.

    ``model`` and ``kind`` are recorded in ``load_info`` (the argument as given and its source kind).

    Raises:
        ModelLoadError: llama.cpp cannot load the file.
        ConfigError: xllamacpp is not installed, or a ``ZHRAG_LLAMA_*`` variable is invalid.
    """
    settings = LlamaCppSettings.from_env(device)
    key = (str(path), settings, str(lora) if lora else None)
    start = time.perf_counter()
    with _lock:
        shared = key in _runtimes
        if not shared:
            _runtimes[key] = LlamaCppRuntime(path, settings, lora=lora)
        runtime = _runtimes[key]
    info = {
        "model": model,
        "kind": kind,
        "engine": "llama.cpp",
        "source": str(path),
        "cache_hit": cache_hit,
        "shared_base": shared,
        "load_s": round(time.perf_counter() - start, 3),
        "device": ", ".join(runtime.devices) or "cpu",
        "dtype": "q4_k_m" if "q4_k_m" in path.name.lower() else None,
        "adapter": adapter,
        "gguf_lora": str(lora) if lora else None,
        "threads": settings.n_threads,
        "parallel_slots": settings.n_parallel,
        "n_ctx": settings.n_ctx,
    }
    return LlamaCppLLM(runtime, load_info=info)
