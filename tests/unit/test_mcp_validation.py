"""The MCP tools' argument validation and settings, in memory (no model, no Qdrant, no subprocess)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from langchain_core.messages import ToolMessage
from mcp.shared.memory import create_connected_server_and_client_session

from zhrag.errors import ConfigError, MCPServerError
from zhrag.kb.passage import Passage
from zhrag.mcp.client import ServerConfig, _result_items, _to_passage
from zhrag.mcp.server import ServerSettings, build_server, parse_args


class RecordingStore:
    """Answers every search with fixed passages and records what the tools asked for."""

    def __init__(self) -> None:
        self.searches: list[tuple[str, int]] = []
        self.added: list[tuple[str, str, dict[str, Any] | None]] = []

    def search(self, query: str, top_k: int) -> list[Passage]:
        self.searches.append((query, top_k))
        return [
            Passage(id=f"doc{n}#0", title=f"标题{n}", text=f"{query} 第{n}段", score=1.0 / (n + 1)) for n in range(top_k)
        ]

    def add(
        self, text: str, title: str = "", metadata: dict[str, Any] | None = None, doc_id: str | None = None
    ) -> list[str]:
        self.added.append((text, title, metadata))
        return ["added#0"]


def call(store: RecordingStore, calls: list[tuple[str, dict[str, Any]]], **settings: Any) -> list[Any]:
    """Run tool calls over one in-memory MCP session; return the CallToolResults."""

    async def run() -> list[Any]:
        server = build_server(store, ServerSettings(**settings))
        async with create_connected_server_and_client_session(server) as session:
            return [await session.call_tool(name, arguments) for name, arguments in calls]

    return asyncio.run(run())


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"query": ""}, "query must not be empty"),
        ({"query": "  \u3000\n"}, "query must not be empty"),
        ({"query": "问" * 1001}, "query is 1001 characters long; the limit is 1000"),
        ({"query": "长江", "top_k": 0}, "top_k must be between 1 and 50, got 0"),
        ({"query": "长江", "top_k": 51}, "top_k must be between 1 and 50, got 51"),
        ({"query": "长江", "top_k": "many"}, "top_k"),
        ({}, "query"),
    ],
)
def test_bad_find_arguments_are_tool_errors_and_the_server_keeps_serving(arguments: dict, message: str):
    store = RecordingStore()
    rejected, accepted = call(store, [("qdrant-find", arguments), ("qdrant-find", {"query": "长江", "top_k": 2})])
    assert rejected.isError and message in rejected.content[0].text
    assert not accepted.isError and len(accepted.structuredContent["result"]) == 2
    assert store.searches == [("长江", 2)]  # the rejected call never reached the store


def test_find_strips_the_query_defaults_top_k_to_the_search_limit_and_returns_structured_passages():
    store = RecordingStore()
    (result,) = call(store, [("qdrant-find", {"query": "  长江有多长？ "})], search_limit=3)
    assert store.searches == [("长江有多长？", 3)]
    passages = result.structuredContent["result"]
    # the optional evidence window is null when the store's search sets none
    assert [{k: v for k, v in p.items() if v is not None} for p in passages] == [
        dict(p) for p in RecordingStore().search("长江有多长？", 3)
    ]
    assert [json.loads(block.text) for block in result.content] == passages


def test_store_takes_the_title_from_metadata_and_rejects_empty_information():
    store = RecordingStore()
    stored, empty, bad_title = call(
        store,
        [
            ("qdrant-store", {"information": "西湖位于杭州。", "metadata": {"title": "西湖", "source": "note"}}),
            ("qdrant-store", {"information": " \n"}),
            ("qdrant-store", {"information": "西湖", "metadata": {"title": 3}}),
        ],
    )
    assert stored.structuredContent == {"ids": ["added#0"]}
    assert store.added == [("西湖位于杭州。", "西湖", {"source": "note"})]
    assert empty.isError and "information must not be empty" in empty.content[0].text
    assert bad_title.isError and "metadata['title'] must be a string" in bad_title.content[0].text


def test_read_only_server_offers_no_store_tool():
    async def tool_names() -> list[str]:
        server = build_server(RecordingStore(), ServerSettings(read_only=True))
        async with create_connected_server_and_client_session(server) as session:
            return [tool.name for tool in (await session.list_tools()).tools]

    assert asyncio.run(tool_names()) == ["qdrant-find"]


def test_settings_layer_cli_over_official_env_over_zhrag_env():
    env = {"COLLECTION_NAME": "notes", "QDRANT_URL": "http://qdrant:6333", "ZHRAG_QDRANT_PATH": "/ignored",
           "QDRANT_SEARCH_LIMIT": "7", "QDRANT_READ_ONLY": "true"}
    from_env = parse_args([], env)
    assert (from_env.collection, from_env.qdrant_url, from_env.qdrant_path) == ("notes", "http://qdrant:6333", None)
    assert from_env.search_limit == 7 and from_env.read_only
    from_cli = parse_args(["--collection", "kb", "--qdrant-path", "/data/q", "--transport", "streamable-http"], env)
    assert (from_cli.collection, from_cli.qdrant_path, from_cli.qdrant_url) == ("kb", "/data/q", None)
    assert from_cli.transport == "streamable-http"
    assert parse_args([], {"ZHRAG_QDRANT_PATH": "/zh"}).qdrant_path == "/zh"


def test_each_embedder_has_its_own_default_collection_everywhere():
    from zhrag import settings
    from zhrag.cli.options import StoreOptions
    from zhrag.graph.context import Context

    assert settings.DEFAULT_EMBEDDER == settings.E5_EMBEDDER
    assert [settings.default_collection(name) for name in (settings.E5_EMBEDDER, "all-minilm-l6-v2", "use-multilingual")] == [
        "zhrag_kb_e5", "zhrag_kb", "zhrag_kb_use"]
    assert settings.default_collection("/models/My-BGE.v2/") == "zhrag_kb_my_bge_v2"
    assert settings.default_collection("BAAI/bge-small-zh") == "zhrag_kb_bge_small_zh"
    # The server: the collection follows the embedder given last, unless a collection is named.
    assert parse_args([], {}).collection == "zhrag_kb_e5"
    assert parse_args(["--embedder", "all-minilm-l6-v2"], {}).collection == "zhrag_kb"
    assert parse_args([], {"EMBEDDING_MODEL": "use-multilingual"}).collection == "zhrag_kb_use"
    assert parse_args(["--embedder", "all-minilm-l6-v2"], {"COLLECTION_NAME": "mine"}).collection == "mine"
    assert parse_args(["--embedder", "all-minilm-l6-v2", "--collection", "kb"], {}).collection == "kb"
    # The client, the run context and the CLI options agree.
    assert ServerConfig(embedder="use-multilingual").collection == "zhrag_kb_use"
    assert ServerConfig(embedder="use-multilingual").launch_command()[3:5] == ["--collection", "zhrag_kb_use"]
    assert Context(embedder="all-minilm-l6-v2").collection == "zhrag_kb"
    assert Context(embedder="all-minilm-l6-v2", collection="x").collection == "x"
    assert StoreOptions(embedder="all-minilm-l6-v2").resolved().collection == "zhrag_kb"
    assert StoreOptions().resolved().collection == "zhrag_kb_e5"


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        ([], {"QDRANT_URL": "http://q:6333", "QDRANT_LOCAL_PATH": "/q"}, "not both"),
        ([], {"QDRANT_SEARCH_LIMIT": "ten"}, "QDRANT_SEARCH_LIMIT must be a positive integer"),
        (["--search-limit", "0"], {}, "search limit must be between 1 and 50"),
        (["--port", "70000"], {}, "port must be between 1 and 65535"),
        (["--collection", " "], {}, "collection name must not be empty"),
    ],
)
def test_bad_settings_raise_config_errors(argv: list[str], env: dict[str, str], message: str):
    with pytest.raises(ConfigError, match=message):
        parse_args(argv, env)


def test_server_config_launches_the_module_with_its_location():
    embedded = ServerConfig(collection="kb", qdrant_path="/data/q", ensure_index=True, kb_source="/kb.jsonl")
    command = embedded.launch_command()
    assert command[1:3] == ["-m", "zhrag.mcp.server"]
    assert parse_args(command[3:], {}) == ServerSettings(
        collection="kb", qdrant_path="/data/q", ensure_index=True, kb_source="/kb.jsonl"
    )
    remote = ServerConfig(qdrant_url="http://q:6333", qdrant_path="/ignored").launch_command()
    assert "--qdrant-url" in remote and "--qdrant-path" not in remote
    assert ServerConfig(command="my-server", args=("--x",)).launch_command() == ["my-server", "--x"]
    assert ServerConfig(qdrant_path="/a") == ServerConfig(qdrant_path="/a")
    assert hash(ServerConfig(qdrant_path="/a")) == hash(ServerConfig(qdrant_path="/a"))
    assert embedded.startup_timeout > ServerConfig().startup_timeout


def test_client_parses_structured_and_text_only_tool_results():
    passage = {"id": "a#0", "title": "长江", "text": "长江很长。", "score": 0.5}
    structured = ToolMessage(
        content=[{"type": "text", "text": json.dumps(passage)}], tool_call_id="1", name="qdrant-find",
        artifact={"structured_content": {"result": [passage]}},
    )
    block = {"type": "text", "text": json.dumps(passage)}
    per_block = ToolMessage(content=[block, block], tool_call_id="2", name="qdrant-find")
    one_list = ToolMessage(content=json.dumps([passage]), tool_call_id="3", name="qdrant-find")
    assert [_to_passage(item) for item in _result_items(structured, "qdrant-find")] == [passage]
    assert [_to_passage(item) for item in _result_items(per_block, "qdrant-find")] == [passage, passage]
    assert [_to_passage(item) for item in _result_items(one_list, "qdrant-find")] == [passage]
    with pytest.raises(MCPServerError, match="not JSON"):
        _result_items(ToolMessage(content="Results: none", tool_call_id="4", name="qdrant-find"), "qdrant-find")
    with pytest.raises(MCPServerError, match="malformed passage"):
        _to_passage({"title": "no id"})


def test_idle_spawned_servers_are_closed_when_another_configuration_is_asked_for(monkeypatch):
    import time as time_module

    from zhrag.mcp import client as mcp_client

    class Idle:
        def __init__(self, idle_s: float) -> None:
            self.last_used, self.closed, self.close_calls = time_module.monotonic() - idle_s, False, 0

        def close(self) -> None:
            self.close_calls += 1

    fresh, stale = mcp_client.ServerConfig(collection="fresh"), mcp_client.ServerConfig(collection="stale")
    wanted = mcp_client.ServerConfig(collection="wanted")
    clients = {fresh: Idle(5), stale: Idle(700), wanted: Idle(10_000)}
    monkeypatch.setattr(mcp_client, "_clients", dict(clients))
    monkeypatch.setenv(mcp_client.IDLE_ENV, "600")
    mcp_client._close_idle(keep=wanted)
    assert set(mcp_client._clients) == {fresh, wanted}  # the one asked for is kept however long it idled
    assert [clients[c].close_calls for c in (fresh, stale, wanted)] == [0, 1, 0]
