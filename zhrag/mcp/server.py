"""MCP server ``zhrag-knowledge``: the knowledge base as the tools ``qdrant-find`` and ``qdrant-store``.

The tool names, argument names and environment variables follow the official ``mcp-server-qdrant`` so
existing MCP client configurations (Cline, Claude Desktop) work unchanged; ``qdrant-find`` adds an
optional ``top_k`` and returns structured passages (id, title, text, score) instead of XML-ish text.

Run it with ``python -m zhrag.mcp.server`` (stdio) or ``--transport streamable-http``. Settings come
from command-line options, then the environment (``COLLECTION_NAME``, ``QDRANT_URL``,
``QDRANT_LOCAL_PATH``, ``EMBEDDING_MODEL``, ``QDRANT_SEARCH_LIMIT``, ``QDRANT_READ_ONLY``,
``TOOL_FIND_DESCRIPTION``, ``TOOL_STORE_DESCRIPTION``, ``FASTMCP_HOST``, ``FASTMCP_PORT``; the project's
``ZHRAG_QDRANT_PATH`` / ``ZHRAG_QDRANT_URL`` are fallbacks, and ``ZHRAG_QDRANT_ENGINE`` picks the embedded
engine), then the defaults in :mod:`zhrag.settings`.

The HTTP transport serves many clients at once (graphs, CLI commands, evaluations, other MCP clients), so the
embedded store has one owner: the tools run on worker threads, one store operation at a time, never on the event
loop. With ``ZHRAG_MCP_TOKEN`` set, every HTTP request must carry ``Authorization: Bearer <token>``; without it the
server binds loopback addresses only. ``QDRANT_API_KEY`` is sent to a Qdrant server.

Logging goes to stderr only: with the stdio transport stdout carries the protocol.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hmac
import json
import logging
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol

import anyio
from mcp.server.fastmcp import FastMCP
from mcp.server.fastmcp.exceptions import ToolError
from pydantic import BaseModel, Field

from zhrag import settings
from zhrag.errors import ConfigError, QdrantUnavailableError, ZhragError
from zhrag.kb.passage import MAX_TOP_K, Passage

if TYPE_CHECKING:
    from zhrag.kb.store import KnowledgeStore

SERVER_NAME = "zhrag-knowledge"
FIND_TOOL = "qdrant-find"
STORE_TOOL = "qdrant-store"
MAX_QUERY_CHARS = 1000
MAX_INFORMATION_CHARS = 100_000
#: Longest title and largest metadata (as JSON) that ``qdrant-store`` accepts.
MAX_TITLE_CHARS = 200
MAX_METADATA_CHARS = 10_000
TOKEN_ENV = settings.MCP_TOKEN_ENV

DEFAULT_FIND_DESCRIPTION = (
    "Search the Chinese knowledge base (Wikipedia paragraphs) for passages relevant to a query. "
    "Returns the best passages first, each with id, title, text and score."
)
DEFAULT_STORE_DESCRIPTION = (
    "Store a piece of information in the knowledge base so that later searches can find it. "
    "Put an optional title in metadata['title']. Returns the ids of the stored passages."
)
INSTRUCTIONS = (
    "知识库检索服务。用 qdrant-find 按问题检索相关段落（中文维基百科），用 qdrant-store 添加新的资料。"
)

Transport = Literal["stdio", "streamable-http"]
logger = logging.getLogger("zhrag.mcp.server")


class PassageStore(Protocol):
    """What the tools need from the knowledge base (:class:`KnowledgeService`)."""

    def search(self, query: str, top_k: int) -> list[Passage]:
        """Return the ``top_k`` best passages for ``query``."""
        ...

    def add(
        self, text: str, title: str = "", metadata: dict[str, Any] | None = None, doc_id: str | None = None
    ) -> list[str]:
        """Store ``text`` and return the ids of its chunks."""
        ...


class KnowledgeService:
    """The knowledge store as the tools use it: reranked search (``qdrant-find``) and notes (``qdrant-store``)."""

    def __init__(self, store: KnowledgeStore, reranker: str | None = None) -> None:
        from zhrag.kb.retrieval import Retriever

        self.store = store
        self._retriever = Retriever(store, reranker)

    def search(self, query: str, top_k: int) -> list[Passage]:
        """The ``top_k`` best passages for ``query``."""
        return self._retriever.search(query, top_k)

    def add(
        self, text: str, title: str = "", metadata: dict[str, Any] | None = None, doc_id: str | None = None
    ) -> list[str]:
        """Store ``text`` as a note; the ids of its chunks (one point as LangChain writes it in a LangChain collection)."""
        from zhrag.kb.indexing import add_document

        langchain = self.store.langchain_collection()
        if langchain is not None:
            extra = {**(metadata or {}), **({"id": doc_id} if doc_id else {})}
            return langchain.add([text], [{**({"title": title} if title else {}), **extra}])
        return add_document(self.store, text, title, metadata, doc_id)


class FoundPassage(BaseModel):
    """One passage returned by ``qdrant-find``."""

    id: str = Field(description="Stable passage id (<document id>#<chunk number>)")
    title: str = Field(description="Title of the article the passage comes from")
    text: str = Field(description="Passage text")
    score: float = Field(description="Retrieval score, higher is better")
    evidence: str | None = Field(default=None, description="The sentences of the text that best match the query")


class StoredInformation(BaseModel):
    """Result of ``qdrant-store``."""

    ids: list[str] = Field(description="Ids of the stored passages (long texts are split into chunks)")


@dataclass(frozen=True)
class ServerSettings:
    """Everything that configures the knowledge server.

    Attributes:
        collection: Qdrant collection holding the knowledge base.
        qdrant_path: Embedded Qdrant directory; ``None`` means :func:`zhrag.settings.qdrant_path`.
        qdrant_url: Qdrant server URL; when set, ``qdrant_path`` must be ``None``.
        qdrant_engine: Engine of the embedded storage: ``edge`` (Qdrant Edge shards) or ``local``
            (qdrant-client local mode); not used with ``qdrant_url``.
        embedder: Dense embedder (alias, local path or hub id), see ``zhrag.kb.embeddings``.
        reranker: Reranker of ``qdrant-find`` candidates: ``evidence`` (offline, default), ``none`` or
            a sentence-transformers cross-encoder (see ``zhrag.kb.rerank``).
        transport: ``stdio`` or ``streamable-http``.
        host: Bind address for the HTTP transport.
        port: Port for the HTTP transport.
        ensure_index: Index ``kb_source`` at startup when the collection is empty.
        kb_source: Knowledge-base source for ``ensure_index``; ``None`` means the default KB.
        search_limit: Default ``top_k`` of ``qdrant-find``.
        read_only: Do not offer ``qdrant-store``.
        find_description: Description of ``qdrant-find`` shown to MCP clients.
        store_description: Description of ``qdrant-store`` shown to MCP clients.
        token: Bearer token every HTTP request must carry (``ZHRAG_MCP_TOKEN``); ``None``: loopback only.
    """

    collection: str | None = None
    qdrant_path: str | None = None
    qdrant_url: str | None = None
    qdrant_engine: str = settings.QDRANT_ENGINES[0]
    embedder: str = settings.DEFAULT_EMBEDDER
    reranker: str = "evidence"
    transport: Transport = "stdio"
    host: str = "127.0.0.1"
    port: int = 8000
    ensure_index: bool = False
    kb_source: str | None = None
    search_limit: int = 5
    read_only: bool = False
    find_description: str = DEFAULT_FIND_DESCRIPTION
    store_description: str = DEFAULT_STORE_DESCRIPTION
    token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        collection = self.collection
        if collection is None:  # one collection per embedder (settings.default_collection)
            collection = settings.default_collection(self.embedder)
            object.__setattr__(self, "collection", collection)
        if not collection.strip():
            raise ConfigError("the Qdrant collection name must not be empty")
        if self.qdrant_path and self.qdrant_url:
            raise ConfigError("give either a Qdrant path (embedded) or a Qdrant URL, not both")
        if self.qdrant_engine not in settings.QDRANT_ENGINES:
            raise ConfigError(
                f"unknown Qdrant engine {self.qdrant_engine!r}: use {' or '.join(settings.QDRANT_ENGINES)}"
            )
        if self.transport not in ("stdio", "streamable-http"):
            raise ConfigError(f"unknown MCP transport {self.transport!r}: use stdio or streamable-http")
        if not 1 <= self.port <= 65535:
            raise ConfigError(f"port must be between 1 and 65535, got {self.port}")
        if not 1 <= self.search_limit <= MAX_TOP_K:
            raise ConfigError(f"search limit must be between 1 and {MAX_TOP_K}, got {self.search_limit}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServerSettings:
        """Settings from the environment variables of ``mcp-server-qdrant`` and zhrag, else defaults."""
        env = os.environ if environ is None else environ
        path = env.get("QDRANT_LOCAL_PATH") or None
        url = env.get("QDRANT_URL") or None
        if path is None and url is None:
            path = env.get("ZHRAG_QDRANT_PATH") or None
            url = None if path else env.get("ZHRAG_QDRANT_URL") or None
        defaults = cls()
        return cls(
            collection=env.get("COLLECTION_NAME") or None,
            qdrant_path=path,
            qdrant_url=url,
            qdrant_engine=env.get("ZHRAG_QDRANT_ENGINE", "").strip().lower() or defaults.qdrant_engine,
            embedder=env.get("EMBEDDING_MODEL") or defaults.embedder,
            reranker=env.get("ZHRAG_RERANKER") or defaults.reranker,
            host=env.get("FASTMCP_HOST") or defaults.host,
            port=settings.env_int("FASTMCP_PORT", defaults.port, minimum=0, env=env),
            search_limit=settings.env_int("QDRANT_SEARCH_LIMIT", defaults.search_limit, env=env),
            read_only=env.get("QDRANT_READ_ONLY", "").strip().lower() in ("1", "true", "yes", "on"),
            find_description=env.get("TOOL_FIND_DESCRIPTION") or defaults.find_description,
            store_description=env.get("TOOL_STORE_DESCRIPTION") or defaults.store_description,
            token=env.get(TOKEN_ENV) or None,
        )


def build_arg_parser(prog: str = "python -m zhrag.mcp.server") -> argparse.ArgumentParser:
    """The command-line options of the server (every option defaults to the environment)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="MCP server exposing the zhrag knowledge base as qdrant-find / qdrant-store.",
    )
    parser.add_argument("--collection", help="Qdrant collection (env COLLECTION_NAME)")
    location = parser.add_mutually_exclusive_group()
    location.add_argument("--qdrant-path", help="embedded Qdrant directory (env QDRANT_LOCAL_PATH, ZHRAG_QDRANT_PATH)")
    location.add_argument("--qdrant-url", help="Qdrant server URL (env QDRANT_URL, ZHRAG_QDRANT_URL)")
    parser.add_argument(
        "--qdrant-engine", choices=settings.QDRANT_ENGINES, help="embedded engine (env ZHRAG_QDRANT_ENGINE; edge)"
    )
    parser.add_argument("--embedder", help="dense embedder alias, path or hub id (env EMBEDDING_MODEL)")
    parser.add_argument(
        "--reranker", help="evidence (default), none, or a cross-encoder name/path (env ZHRAG_RERANKER)"
    )
    parser.add_argument("--transport", choices=["stdio", "streamable-http"], help="MCP transport (default stdio)")
    parser.add_argument("--host", help="HTTP bind address (env FASTMCP_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="HTTP port (env FASTMCP_PORT, default 8000)")
    parser.add_argument("--search-limit", type=int, help="default top_k of qdrant-find (env QDRANT_SEARCH_LIMIT)")
    parser.add_argument("--read-only", action="store_true", default=None, help="do not offer qdrant-store")
    parser.add_argument(
        "--ensure-index", action="store_true", default=None, help="first index the KB if the collection is empty"
    )
    parser.add_argument("--kb", dest="kb_source", help="knowledge-base source for --ensure-index (env ZHRAG_KB)")
    return parser


def parse_args(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None, *, prog: str | None = None
) -> ServerSettings:
    """Settings from command-line options layered over :meth:`ServerSettings.from_env`."""
    args = (build_arg_parser(prog) if prog else build_arg_parser()).parse_args(argv)
    base = ServerSettings.from_env(environ)
    if args.qdrant_path or args.qdrant_url:
        base = replace(base, qdrant_path=None, qdrant_url=None)
    overrides = {name: value for name, value in vars(args).items() if value is not None}
    env = os.environ if environ is None else environ
    if args.collection is None and not env.get("COLLECTION_NAME"):  # the collection of the embedder chosen last
        overrides["collection"] = settings.default_collection(overrides.get("embedder", base.embedder))
    return replace(base, **overrides)


def build_server(store: PassageStore, server_settings: ServerSettings) -> FastMCP:
    """A FastMCP server whose tools search (and, unless read-only, extend) ``store``."""
    server = FastMCP(
        SERVER_NAME,
        instructions=INSTRUCTIONS,
        host=server_settings.host,
        port=server_settings.port,
        log_level="WARNING",
    )
    default_top_k = server_settings.search_limit

    # One store operation at a time, on a worker thread: the event loop keeps serving other clients meanwhile.
    limiter = anyio.CapacityLimiter(1)

    async def in_worker(call: Any, *args: Any, **kwargs: Any) -> Any:
        return await anyio.to_thread.run_sync(functools.partial(call, *args, **kwargs), limiter=limiter)

    async def find(
        query: Annotated[str, Field(description=f"What to search for (1 to {MAX_QUERY_CHARS} characters)")],
        top_k: Annotated[int, Field(description=f"How many passages to return (1 to {MAX_TOP_K})")] = default_top_k,
    ) -> list[FoundPassage]:
        """Return the passages that best match ``query``, best first."""
        query = query.strip()
        if not query:
            raise ToolError("query must not be empty")
        if len(query) > MAX_QUERY_CHARS:
            raise ToolError(f"query is {len(query)} characters long; the limit is {MAX_QUERY_CHARS}")
        if not 1 <= top_k <= MAX_TOP_K:
            raise ToolError(f"top_k must be between 1 and {MAX_TOP_K}, got {top_k}")
        passages = await in_worker(store.search, query, top_k)
        return [FoundPassage(**passage) for passage in passages]

    async def store_information(
        information: Annotated[str, Field(description="Text to store")],
        metadata: Annotated[
            dict[str, Any] | None,
            Field(description="Extra metadata stored with the information; 'title' names its article"),
        ] = None,
    ) -> StoredInformation:
        """Add ``information`` to the knowledge base and return the ids of its passages."""
        if not information.strip():
            raise ToolError("information must not be empty")
        if len(information) > MAX_INFORMATION_CHARS:
            raise ToolError(f"information is {len(information)} characters long; the limit is {MAX_INFORMATION_CHARS}")
        extra = dict(metadata or {})
        title = extra.pop("title", "")
        if not isinstance(title, str):
            raise ToolError("metadata['title'] must be a string")
        if len(title) > MAX_TITLE_CHARS:
            raise ToolError(f"metadata['title'] is {len(title)} characters long; the limit is {MAX_TITLE_CHARS}")
        try:
            size = len(json.dumps(extra, ensure_ascii=False))
        except (TypeError, ValueError):
            raise ToolError("metadata must be JSON (strings, numbers, lists and objects)") from None
        if size > MAX_METADATA_CHARS:
            raise ToolError(f"metadata is {size} characters as JSON; the limit is {MAX_METADATA_CHARS}")
        ids = await in_worker(store.add, information, title=title, metadata=extra or None)
        return StoredInformation(ids=ids)

    server.add_tool(find, name=FIND_TOOL, description=server_settings.find_description, structured_output=True)
    if not server_settings.read_only:
        server.add_tool(
            store_information, name=STORE_TOOL, description=server_settings.store_description, structured_output=True
        )
    return server


def configure_logging() -> None:
    """Send all logging to stderr (warnings only) and silence chatty libraries."""
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("zhrag").setLevel(logging.INFO)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read when transformers is imported
    import jieba  # jieba installs its own DEBUG-level stderr handler on import

    jieba.setLogLevel(logging.WARNING)


@contextlib.contextmanager
def open_store(server_settings: ServerSettings) -> Iterator[KnowledgeService]:
    """Open the knowledge store (and index the KB if asked) for the tools; close it on exit.

    Raises:
        QdrantUnavailableError: Qdrant cannot be opened.
        KnowledgeBaseError: ``ensure_index`` was asked and the knowledge base cannot be indexed.
    """
    from zhrag.kb.indexing import ensure_index
    from zhrag.kb.store import KnowledgeStore

    url = server_settings.qdrant_url
    path = None if url else server_settings.qdrant_path or str(settings.qdrant_path())
    where = url or path
    # Libraries must not print to stdout: with the stdio transport it carries the protocol.
    with contextlib.redirect_stdout(sys.stderr):
        try:
            store = KnowledgeStore(
                server_settings.collection,
                path=path,
                url=url,
                embedder=server_settings.embedder,
                engine=server_settings.qdrant_engine,
            )
        except ZhragError:
            raise
        except Exception as exc:
            raise QdrantUnavailableError(f"cannot open Qdrant at {where}: {_first_line(exc)}") from exc
    with store:
        with contextlib.redirect_stdout(sys.stderr):
            if server_settings.ensure_index:
                ensure_index(store, source=server_settings.kb_source or settings.default_kb_source())
            elif store.count() == 0:
                logger.warning(
                    "collection %s at %s is empty: index a knowledge base or start with --ensure-index",
                    server_settings.collection,
                    where,
                )
            _ = store.embedder  # load the embedder now: fail at startup, not on the first search
            service = KnowledgeService(store, server_settings.reranker)
        yield service


def serve(server_settings: ServerSettings) -> None:
    """Open the store, serve the tools over the configured transport until stopped, close the store.

    Raises:
        ConfigError: the HTTP transport on a non-loopback address without ``ZHRAG_MCP_TOKEN``.
    """
    configure_logging()
    if (
        server_settings.transport == "streamable-http"
        and not server_settings.token
        and not settings.is_loopback(server_settings.host)
    ):
        raise ConfigError(
            f"serving on {server_settings.host} needs a bearer token: set {TOKEN_ENV} (clients send the same)"
        )
    with open_store(server_settings) as store:
        server = build_server(store, server_settings)
        if server_settings.transport != "streamable-http":
            server.run(transport=server_settings.transport)
            return
        logger.info(
            "%s serving collection %s at http://%s:%d%s%s",
            SERVER_NAME,
            server_settings.collection,
            server_settings.host,
            server_settings.port,
            server.settings.streamable_http_path,
            " (bearer token required)" if server_settings.token else "",
        )
        anyio.run(_serve_http, server, server_settings.token)


async def _serve_http(server: FastMCP, token: str | None) -> None:
    import uvicorn

    app = server.streamable_http_app()
    config = uvicorn.Config(
        BearerTokenMiddleware(app, token) if token else app,
        host=server.settings.host,
        port=server.settings.port,
        log_level="warning",
    )
    await uvicorn.Server(config).serve()


class BearerTokenMiddleware:
    """ASGI middleware answering 401 to HTTP requests without ``Authorization: Bearer <token>``."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(given, self._expected):
                body = b'{"error": "missing or wrong bearer token"}'
                await send({"type": "http.response.start", "status": 401, "headers": [
                    (b"content-type", b"application/json"), (b"www-authenticate", b"Bearer"),
                    (b"content-length", str(len(body)).encode()),
                ]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Command-line entry point; returns the exit status (2 with a one-line error for user-caused problems)."""
    try:
        serve(parse_args(argv, prog=prog))
    except ZhragError as exc:
        print(f"{SERVER_NAME}: error: {_first_line(exc)}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
