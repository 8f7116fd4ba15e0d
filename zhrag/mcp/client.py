"""Synchronous client of the ``zhrag-knowledge`` MCP server, one long-lived session per server.

The server is either spawned (stdio, one process per :class:`ServerConfig`) or already running and reached by URL
(``ServerConfig.url``: ``zhrag serve-mcp --transport streamable-http``, shared by many processes; the bearer token
comes from ``ZHRAG_MCP_TOKEN``). Spawned servers left idle for ``ZHRAG_MCP_IDLE_S`` seconds (default 600) are
closed when another configuration is asked for.

Graph nodes are synchronous and may run on worker threads of an async host (``langgraph dev``), so the
MCP session lives on a dedicated background thread with its own event loop; :meth:`KnowledgeClient.find`
submits tool calls to that loop and blocks until the answer arrives. The server process is started once
per :class:`ServerConfig` (see :func:`get_knowledge_client`) and serves every call until
:meth:`KnowledgeClient.close` or interpreter exit.

The tools are loaded with langchain-mcp-adapters (``load_mcp_tools``) on a session opened with the MCP
SDK's ``stdio_client``: unlike ``MultiServerMCPClient.session`` it lets us read the server's stderr,
whose last line explains a server that fails to start.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import concurrent.futures
import contextlib
import json
import logging
import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import anyio
from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool, ToolException
from langchain_mcp_adapters.tools import load_mcp_tools
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import McpError
from mcp.types import CONNECTION_CLOSED

from zhrag import settings
from zhrag.errors import MCPServerError
from zhrag.kb.passage import Passage

FIND_TOOL = "qdrant-find"
STORE_TOOL = "qdrant-store"
_SERVER_MODULE = "zhrag.mcp.server"
_DEFAULT_STARTUP_TIMEOUT_S = 180.0
_INDEXING_STARTUP_TIMEOUT_S = 1800.0
_SHUTDOWN_TIMEOUT_S = 10.0
TOKEN_ENV = settings.MCP_TOKEN_ENV
IDLE_ENV = "ZHRAG_MCP_IDLE_S"
_DEFAULT_IDLE_S = 600.0

_server_log = logging.getLogger("zhrag.mcp.server.stderr")

_launch_lock = threading.Lock()
_launches = 0


def server_launches() -> int:
    """How many times this Python process has launched an MCP server (including failed starts)."""
    return _launches


def _count_launch() -> None:
    global _launches
    with _launch_lock:
        _launches += 1


@dataclass(frozen=True)
class ServerConfig:
    """How to launch the knowledge server; equal configs share one server (see :func:`get_knowledge_client`).

    Attributes:
        collection: Qdrant collection of the knowledge base; ``None`` means the embedder's
            (:func:`zhrag.settings.default_collection`).
        qdrant_path: Embedded Qdrant directory; ``None`` means :func:`zhrag.settings.qdrant_path`.
        qdrant_url: Qdrant server URL (takes precedence over ``qdrant_path``).
        qdrant_engine: Engine of the embedded storage (``edge`` or ``local``); ``None`` means
            :func:`zhrag.settings.qdrant_engine`.
        embedder: Dense embedder alias, local path or hub id.
        reranker: Reranker the server's store applies (``evidence``, ``none`` or a cross-encoder).
        ensure_index: Let the server index ``kb_source`` first when the collection is empty.
        kb_source: Knowledge-base source for ``ensure_index``; ``None`` means the default KB.
        command: Explicit server executable; ``None`` runs ``python -m zhrag.mcp.server``.
        args: Arguments for ``command`` (ignored without it).
        env: Extra environment variables for the server, as ``(name, value)`` pairs.
        startup_timeout_s: Longest wait for the server to answer the MCP handshake; ``None`` means
            180 s, or 1800 s with ``ensure_index`` (indexing the default KB takes minutes).
        call_timeout_s: Longest wait for one tool call.
        url: A running knowledge server's MCP endpoint (``http://host:8765/mcp``); when set, nothing is spawned
            and the location fields above are the server's business (it serves its own collection).
    """

    collection: str | None = None
    qdrant_path: str | None = None
    qdrant_url: str | None = None
    qdrant_engine: str | None = None
    embedder: str = settings.DEFAULT_EMBEDDER
    reranker: str = "evidence"
    ensure_index: bool = False
    kb_source: str | None = None
    command: str | None = None
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    startup_timeout_s: float | None = None
    call_timeout_s: float = 120.0
    url: str | None = None

    def __post_init__(self) -> None:
        if self.collection is None:
            object.__setattr__(self, "collection", settings.default_collection(self.embedder))

    @property
    def startup_timeout(self) -> float:
        """Seconds to wait for the server to start."""
        if self.startup_timeout_s is not None:
            return self.startup_timeout_s
        return _INDEXING_STARTUP_TIMEOUT_S if self.ensure_index else _DEFAULT_STARTUP_TIMEOUT_S

    def launch_command(self) -> list[str]:
        """The server command line: the explicit ``command`` or ``python -m zhrag.mcp.server ...``."""
        if self.url is not None:
            return [self.url]
        if self.command is not None:
            return [self.command, *self.args]
        assert self.collection is not None  # set by __post_init__
        command = [sys.executable, "-m", _SERVER_MODULE, "--collection", self.collection, "--embedder", self.embedder]
        command += ["--reranker", self.reranker]
        if self.qdrant_url:
            command += ["--qdrant-url", self.qdrant_url]
        else:
            command += ["--qdrant-path", self.qdrant_path or str(settings.qdrant_path())]
            command += ["--qdrant-engine", self.qdrant_engine or settings.qdrant_engine()]
        if self.ensure_index:
            command.append("--ensure-index")
            if self.kb_source:
                command += ["--kb", self.kb_source]
        return command

    def stdio_parameters(self) -> StdioServerParameters:
        """MCP stdio launch parameters; the server inherits this process's environment plus ``env``."""
        command, *args = self.launch_command()
        return StdioServerParameters(command=command, args=args, env={**os.environ, **dict(self.env)})


class _StderrTail:
    """A pipe for the server's stderr: a reader thread logs each line and keeps the last few."""

    def __init__(self) -> None:
        read_fd, write_fd = os.pipe()
        self.writer = os.fdopen(write_fd, "w")
        self._reader = os.fdopen(read_fd, "r", encoding="utf-8", errors="replace")
        self._lines: collections.deque[str] = collections.deque(maxlen=20)
        self._thread = threading.Thread(target=self._pump, name="zhrag-mcp-stderr", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        with self._reader:
            for raw in self._reader:
                line = raw.rstrip().rsplit("\r", 1)[-1].strip()  # keep the final state of progress bars
                if line:
                    self._lines.append(line)
                    _server_log.warning("%s", line)

    def last_line(self) -> str:
        """The server's most recent non-empty stderr line ("" if none)."""
        return self._lines[-1] if self._lines else ""

    def finish(self) -> None:
        """Close our end of the pipe and wait until everything the server wrote has been read."""
        if not self.writer.closed:
            self.writer.close()
        self._thread.join(timeout=_SHUTDOWN_TIMEOUT_S)


def _innermost(exc: BaseException) -> BaseException:
    """The first leaf exception of (nested) exception groups."""
    while getattr(exc, "exceptions", None):
        exc = exc.exceptions[0]  # type: ignore[attr-defined]
    return exc


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _describe(exc: BaseException) -> str:
    leaf = _innermost(exc)
    return _one_line(str(leaf)) or type(leaf).__name__


def _is_disconnect(exc: BaseException) -> bool:
    """Whether ``exc`` means the server process is gone (closed pipes or connection)."""
    leaf = _innermost(exc)
    if isinstance(leaf, McpError):
        return leaf.error.code == CONNECTION_CLOSED
    return isinstance(leaf, (anyio.ClosedResourceError, anyio.BrokenResourceError, BrokenPipeError))


class KnowledgeClient:
    """One knowledge server process and one MCP session, usable from any thread.

    Starting blocks until the server has completed the MCP handshake and listed its tools, or raises
    :class:`MCPServerError` (with the server's last stderr line) within ``config.startup_timeout``.

    Attributes:
        config: The server configuration this client was started with.
    """

    def __init__(self, config: ServerConfig | None = None) -> None:
        self.config = config or ServerConfig()
        self._close_lock = threading.Lock()
        self._closed = False
        self._lost = False
        self._stderr = _StderrTail()
        self.last_used = time.monotonic()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="zhrag-mcp-session", daemon=True)
        self._thread.start()
        self._stop = asyncio.Event()
        ready: concurrent.futures.Future[dict[str, BaseTool]] = concurrent.futures.Future()
        self._session = asyncio.run_coroutine_threadsafe(self._hold_session(ready), self._loop)
        try:
            self._tools = ready.result(timeout=self.config.startup_timeout)
        except concurrent.futures.TimeoutError:
            self._shutdown(cancel=True)
            raise MCPServerError(
                f"MCP server did not start within {self.config.startup_timeout:.0f} s{self._stderr_hint()}"
            ) from None
        except Exception as exc:
            self._shutdown()
            detail = self._stderr.last_line() or _describe(exc)
            if self.config.url:
                raise MCPServerError(f"MCP server at {self.config.url} is unreachable: {detail}") from exc
            raise MCPServerError(f"MCP server {self.config.launch_command()[0]!r} failed to start: {detail}") from exc
        except BaseException:  # KeyboardInterrupt while waiting: stop the half-started server, then propagate
            self._shutdown(cancel=True)
            raise
        atexit.register(self.close)

    async def _hold_session(self, ready: concurrent.futures.Future[dict[str, BaseTool]]) -> None:
        """Open the session, publish its tools through ``ready`` and keep it open until ``close``."""
        try:
            async with contextlib.AsyncExitStack() as stack:
                if self.config.url:
                    token = os.environ.get(TOKEN_ENV)
                    http = await stack.enter_async_context(
                        create_mcp_http_client(headers={"Authorization": f"Bearer {token}"} if token else None)
                    )
                    read, write, _ = await stack.enter_async_context(
                        streamable_http_client(self.config.url, http_client=http)
                    )
                else:
                    _count_launch()
                    read, write = await stack.enter_async_context(
                        stdio_client(self.config.stdio_parameters(), errlog=self._stderr.writer)
                    )
                session = await stack.enter_async_context(ClientSession(read, write))
                await session.initialize()
                tools = await load_mcp_tools(session, handle_tool_errors=False)
                ready.set_result({tool.name: tool for tool in tools})
                await self._stop.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            raise

    @property
    def closed(self) -> bool:
        """True once the client was closed or its server has stopped."""
        return self._closed or self._lost or self._session.done()

    def find(self, query: str, top_k: int = 5) -> list[Passage]:
        """Call ``qdrant-find``: the ``top_k`` best passages for ``query``, best first.

        Raises:
            MCPServerError: The server rejected the arguments (its message), failed, stopped or timed out.
        """
        message = self._call(FIND_TOOL, {"query": query, "top_k": top_k})
        return [_to_passage(item) for item in _result_items(message, FIND_TOOL)]

    def openai_tool(self, name: str) -> dict[str, Any]:
        """The server's tool ``name`` as an OpenAI function spec (name, description, JSON-schema parameters).

        Raises:
            MCPServerError: the server offers no such tool.
        """
        from langchain_core.utils.function_calling import convert_to_openai_tool

        tool = self._tools.get(name)
        if tool is None:
            raise MCPServerError(f"the MCP knowledge server offers no tool {name} (tools: {', '.join(self._tools)})")
        return convert_to_openai_tool(tool)

    def store(self, information: str, metadata: dict[str, Any] | None = None) -> list[str]:
        """Call ``qdrant-store``: add ``information`` (title in ``metadata['title']``); return passage ids.

        Raises:
            MCPServerError: The server rejected the arguments (its message), failed, stopped or timed out.
        """
        message = self._call(STORE_TOOL, {"information": information, "metadata": metadata})
        structured = _structured(message)
        payload = structured if structured is not None else _text_json(message)
        ids = payload.get("ids") if isinstance(payload, dict) else None
        if not isinstance(ids, list):
            raise MCPServerError(f"{STORE_TOOL} returned no passage ids")
        return [str(passage_id) for passage_id in ids]

    def _call(self, name: str, args: dict[str, Any]) -> ToolMessage:
        if self.closed:
            raise MCPServerError(f"the MCP knowledge server is not running{self._stderr_hint()}")
        tool = self._tools.get(name)
        if tool is None:
            raise MCPServerError(f"the MCP knowledge server offers no tool {name} (tools: {', '.join(self._tools)})")
        call = {"type": "tool_call", "id": uuid.uuid4().hex, "name": name, "args": args}
        self.last_used = time.monotonic()
        future = asyncio.run_coroutine_threadsafe(tool.ainvoke(call), self._loop)
        try:
            return future.result(timeout=self.config.call_timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise MCPServerError(
                f"{name} got no answer within {self.config.call_timeout_s:.0f} s{self._stderr_hint()}"
            ) from None
        except ToolException as exc:
            raise MCPServerError(f"{name} failed: {_one_line(str(exc))}") from exc
        except Exception as exc:
            if _is_disconnect(exc):
                self._lost = True
                raise MCPServerError(f"the MCP knowledge server stopped{self._stderr_hint()}") from exc
            raise MCPServerError(f"{name} call failed: {_describe(exc)}{self._stderr_hint()}") from exc
        finally:
            self.last_used = time.monotonic()

    def _stderr_hint(self) -> str:
        line = self._stderr.last_line()
        return f" (server stderr: {line})" if line else ""

    def close(self) -> None:
        """End the session and stop the server process (idempotent)."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        atexit.unregister(self.close)
        self._shutdown()

    def _shutdown(self, *, cancel: bool = False) -> None:
        """Stop the session (politely unless ``cancel``), then the loop thread and the stderr reader."""
        if self._loop.is_running():
            if not cancel:
                self._loop.call_soon_threadsafe(self._stop.set)
                concurrent.futures.wait([self._session], timeout=_SHUTDOWN_TIMEOUT_S)
            if not self._session.done():
                self._session.cancel()
                concurrent.futures.wait([self._session], timeout=_SHUTDOWN_TIMEOUT_S)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=_SHUTDOWN_TIMEOUT_S)
        if not self._thread.is_alive():
            self._loop.close()
        self._stderr.finish()

    def __enter__(self) -> KnowledgeClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _structured(message: ToolMessage) -> dict[str, Any] | None:
    artifact = message.artifact
    if isinstance(artifact, dict) and isinstance(artifact.get("structured_content"), dict):
        return artifact["structured_content"]
    return None


def _text_blocks(message: ToolMessage) -> list[str]:
    if isinstance(message.content, str):
        return [message.content] if message.content else []
    return [
        block["text"] if isinstance(block, dict) else str(block)
        for block in message.content
        if not isinstance(block, dict) or block.get("type") == "text"
    ]


def _text_json(message: ToolMessage) -> Any:
    """The text content parsed as JSON: one value, or a list when the server sent one block per item."""
    try:
        values = [json.loads(text) for text in _text_blocks(message)]
    except json.JSONDecodeError as exc:
        raise MCPServerError(f"{message.name} returned text that is not JSON: {exc}") from exc
    return values[0] if len(values) == 1 else values


def _result_items(message: ToolMessage, name: str) -> list[Any]:
    """The list a tool returned: structured ``{"result": [...]}`` or, without it, the JSON text blocks."""
    structured = _structured(message)
    items = structured.get("result") if structured is not None else _text_json(message)
    if isinstance(items, dict):
        items = [items]
    if not isinstance(items, list):
        raise MCPServerError(f"{name} returned {type(items).__name__}, expected a list of passages")
    return items


def _to_passage(item: Any) -> Passage:
    try:
        passage = Passage(
            id=str(item["id"]), title=str(item.get("title", "")), text=str(item["text"]), score=float(item["score"])
        )
        if item.get("evidence"):
            passage["evidence"] = str(item["evidence"])
        return passage
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise MCPServerError(f"{FIND_TOOL} returned a malformed passage: {_one_line(repr(item))[:200]}") from exc


_clients: dict[ServerConfig, KnowledgeClient] = {}
_clients_lock = threading.Lock()


def get_knowledge_client(config: ServerConfig | None = None) -> KnowledgeClient:
    """The process-wide client for ``config``, starting its server on first use (or after it stopped).

    Spawned servers of other configurations left idle longer than ``ZHRAG_MCP_IDLE_S`` seconds are closed first.
    """
    config = config or ServerConfig()
    with _clients_lock:
        _close_idle(keep=config)
        client = _clients.get(config)
        if client is None or client.closed:
            if client is not None:
                client.close()
            client = KnowledgeClient(config)
            _clients[config] = client
        return client


def _close_idle(keep: ServerConfig) -> None:
    """Close the clients (and spawned servers) other than ``keep``'s unused for the idle time (lock held)."""
    try:
        idle_s = float(os.environ.get(IDLE_ENV) or _DEFAULT_IDLE_S)
    except ValueError:
        idle_s = _DEFAULT_IDLE_S
    now = time.monotonic()
    for other, client in list(_clients.items()):
        if other != keep and (client.closed or now - client.last_used > idle_s):
            del _clients[other]
            client.close()
