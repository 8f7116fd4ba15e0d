"""The knowledge MCP server and client over real stdio, on a tiny Chinese KB in embedded Qdrant."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

from zhrag.errors import MCPServerError
from zhrag.kb.indexing import index_sources
from zhrag.kb.store import KnowledgeStore
from zhrag.mcp.client import KnowledgeClient, ServerConfig, get_knowledge_client, server_launches

pytestmark = [pytest.mark.integration]
#: Server processes are found through /proc (Linux).
HAS_PROC = Path("/proc/self/stat").is_file()

COLLECTION = "mcp_test_kb"
KB = [
    ("changjiang", "长江", "长江是中国第一长河，全长约6300公里，发源于青藏高原的唐古拉山脉，最终注入东海。"),
    ("huanghe", "黄河", "黄河是中国第二长河，全长约5464公里，被称为中华民族的母亲河，流经九个省区。"),
    ("everest", "珠穆朗玛峰", "珠穆朗玛峰是世界海拔最高的山峰，海拔8848.86米，位于中国与尼泊尔的边境线上。"),
    ("luxun", "鲁迅", "鲁迅，原名周樟寿，后改名周树人，浙江绍兴人，代表作有《狂人日记》和《阿Q正传》。"),
    ("gugong", "故宫", "北京故宫是明清两代的皇家宫殿，旧称紫禁城，始建于明成祖永乐四年。"),
    ("panda", "大熊猫", "大熊猫是中国特有的熊科动物，主要以竹子为食，栖息在四川、陕西和甘肃的山区。"),
    ("libai", "李白", "李白，字太白，号青莲居士，唐代浪漫主义诗人，被后人誉为诗仙。"),
    ("greatwall", "长城", "万里长城是中国古代的军事防御工程，东起山海关，西至嘉峪关。"),
]
QUERIES = [
    ("世界海拔最高的山峰是哪座？", "珠穆朗玛峰"),
    ("鲁迅的原名叫什么？", "鲁迅"),
    ("紫禁城是哪两个朝代的皇宫？", "故宫"),
    ("被誉为诗仙的唐代诗人是谁？", "李白"),
    ("大熊猫主要吃什么？", "大熊猫"),
    ("长城的东端起点是哪里？", "长城"),
]


@pytest.fixture(scope="module")
def kb_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny KB as a jsonl source."""
    source = tmp_path_factory.mktemp("mcp_kb_source") / "kb.jsonl"
    source.write_text(
        "".join(json.dumps({"id": i, "title": t, "text": x}, ensure_ascii=False) + "\n" for i, t, x in KB),
        encoding="utf-8",
    )
    return source


@pytest.fixture(scope="module")
def kb_path(kb_source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Embedded Qdrant storage holding the tiny KB, indexed through the store API (then released)."""
    path = tmp_path_factory.mktemp("mcp_kb") / "qdrant"
    with KnowledgeStore(COLLECTION, path=path) as store:
        index_sources(store, [kb_source], progress=False)
        assert store.count() == len(KB)
    return path


@pytest.fixture(scope="module")
def config(kb_path: Path) -> ServerConfig:
    return ServerConfig(collection=COLLECTION, qdrant_path=str(kb_path))


@pytest.fixture(scope="module")
def client(config: ServerConfig) -> Iterator[KnowledgeClient]:
    """The process-wide client of the KB server, started once for the module."""
    start = time.perf_counter()
    knowledge = get_knowledge_client(config)
    print(f"\nMCP server start (handshake + tools listed): {time.perf_counter() - start:.2f} s")
    yield knowledge
    knowledge.close()


def server_pids() -> set[int]:
    """Pids of this process's child processes running the knowledge server (Linux /proc)."""
    pids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat.parent / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if parent == os.getpid() and b"zhrag.mcp.server" in command:
            pids.add(int(stat.parent.name))
    return pids


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize(("query", "title"), QUERIES[:3])
def test_find_returns_the_matching_passage_first(client: KnowledgeClient, query: str, title: str):
    passages = client.find(query, top_k=3)
    assert len(passages) == 3
    assert passages[0]["title"] == title
    assert passages[0]["text"] == next(text for _, t, text in KB if t == title)
    assert passages[0]["id"].startswith(next(i for i, t, _ in KB if t == title))
    scores = [passage["score"] for passage in passages]
    assert all(isinstance(score, float) for score in scores) and scores == sorted(scores, reverse=True)
    assert len({passage["id"] for passage in passages}) == 3


def test_many_finds_from_many_threads_share_one_server(client: KnowledgeClient, config: ServerConfig):
    launches, pids = server_launches(), server_pids()
    if HAS_PROC:
        assert len(pids) == 1
    latencies = []
    for query, title in QUERIES * 2:
        start = time.perf_counter()
        assert client.find(query, top_k=2)[0]["title"] == title
        latencies.append(time.perf_counter() - start)
    with ThreadPoolExecutor(max_workers=4) as pool:
        firsts = list(pool.map(lambda pair: client.find(pair[0], top_k=1)[0]["title"], QUERIES * 2))
    assert firsts == [title for _, title in QUERIES * 2]
    assert get_knowledge_client(config) is client
    assert server_launches() == launches and server_pids() == pids
    print(f"\nqdrant-find over one session: p50 {statistics.median(latencies) * 1000:.0f} ms, "
          f"max {max(latencies) * 1000:.0f} ms over {len(latencies)} calls")


def test_store_then_find_sees_the_new_passage(client: KnowledgeClient):
    ids = client.store("杭州西湖位于浙江省杭州市西部，是中国著名的湖泊风景名胜区。", {"title": "西湖", "source": "test"})
    assert ids and all(isinstance(passage_id, str) for passage_id in ids)
    found = client.find("西湖位于哪个城市？", top_k=3)
    assert found[0]["id"] == ids[0] and found[0]["title"] == "西湖"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"query": ""}, "query must not be empty"),
        ({"query": " \t\n "}, "query must not be empty"),
        ({"query": "长江" * 501}, "limit is 1000"),
        ({"query": "长江", "top_k": 0}, "top_k must be between 1 and 50, got 0"),
        ({"query": "长江", "top_k": 51}, "top_k must be between 1 and 50, got 51"),
    ],
)
def test_bad_find_arguments_are_tool_errors_and_the_session_survives(
    client: KnowledgeClient, arguments: dict, message: str
):
    launches = server_launches()
    with pytest.raises(MCPServerError, match=message) as error:
        client.find(**arguments)
    assert "\n" not in str(error.value)
    assert client.find(QUERIES[3][0], top_k=1)[0]["title"] == QUERIES[3][1]
    assert server_launches() == launches


def test_empty_information_is_a_tool_error(client: KnowledgeClient):
    with pytest.raises(MCPServerError, match="information must not be empty"):
        client.store("   ")
    assert client.find(QUERIES[4][0], top_k=1)[0]["title"] == QUERIES[4][1]


def test_locked_qdrant_makes_the_client_fail_fast_with_the_server_message(tmp_path: Path):
    # "failed to start": the server's exit, not the client's startup timeout ("did not start within")
    with (
        KnowledgeStore(COLLECTION, path=tmp_path / "qdrant"),
        pytest.raises(MCPServerError, match="failed to start: .*is locked") as error,
    ):
        KnowledgeClient(ServerConfig(collection=COLLECTION, qdrant_path=str(tmp_path / "qdrant")))
    assert "\n" not in str(error.value)


def test_locked_qdrant_makes_the_server_exit_with_one_line(tmp_path: Path):
    with KnowledgeStore(COLLECTION, path=tmp_path / "qdrant"):
        result = subprocess.run(
            [sys.executable, "-m", "zhrag.mcp.server", "--qdrant-path", str(tmp_path / "qdrant")],
            capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120,
        )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"zhrag-knowledge: error: embedded Qdrant storage {tmp_path / 'qdrant'} is locked: another process "
        "or client holds it (close it, or run a Qdrant server and pass its URL)"
    ]


def test_bogus_command_fails_fast(tmp_path: Path):
    # "failed to start": the launch error, not the startup timeout ("did not start within")
    with pytest.raises(MCPServerError, match="failed to start: .*No such file"):
        KnowledgeClient(ServerConfig(command=str(tmp_path / "no-such-server")))


def test_crashing_server_reports_its_last_stderr_line():
    crash = "import sys; print('starting', file=sys.stderr); print('qdrant exploded', file=sys.stderr); sys.exit(3)"
    with pytest.raises(MCPServerError, match="failed to start: qdrant exploded$"):
        KnowledgeClient(ServerConfig(command=sys.executable, args=("-c", crash)))


def test_silent_server_times_out_instead_of_hanging():
    silent_s = 600  # the server would stay silent this long; a client that waited for it would hang as long
    start = time.perf_counter()
    with pytest.raises(MCPServerError, match="did not start within 2 s"):
        KnowledgeClient(
            ServerConfig(command=sys.executable, args=("-c", f"import time; time.sleep({silent_s})"), startup_timeout_s=2)
        )
    assert time.perf_counter() - start < silent_s


@pytest.mark.skipif(not HAS_PROC, reason="finds the server process through /proc")
def test_a_crashed_server_is_replaced_and_close_releases_qdrant(kb_source: Path, tmp_path: Path):
    config = ServerConfig(
        collection=COLLECTION, qdrant_path=str(tmp_path / "qdrant"), ensure_index=True, kb_source=str(kb_source)
    )
    others = server_pids()
    first = get_knowledge_client(config)
    ids = first.store("苏州园林以拙政园和留园最为著名。", {"title": "苏州园林"})
    (pid,) = server_pids() - others
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(MCPServerError, match="server stopped"):
        first.find("苏州园林", top_k=1)
    assert first.closed

    launches = server_launches()
    second = get_knowledge_client(config)
    assert second is not first and server_launches() == launches + 1
    assert second.find("拙政园在哪里？", top_k=1)[0]["id"] == ids[0]
    assert second.find(QUERIES[5][0], top_k=1)[0]["title"] == QUERIES[5][1]  # indexed by the first server
    second.close()
    assert second.closed and server_pids() == others
    with pytest.raises(MCPServerError, match="not running"):
        second.find("苏州园林", top_k=1)
    with KnowledgeStore(COLLECTION, path=tmp_path / "qdrant") as store:  # the storage lock was released
        assert store.count() == len(KB) + 1  # the second server did not index the KB again


def test_raw_mcp_protocol_lists_both_tools_and_returns_structured_passages(tmp_path: Path):
    """The server as any MCP client sees it, through the MCP SDK's own stdio client."""

    async def session_run() -> None:
        server = StdioServerParameters(
            command=sys.executable,
            args=["-m", "zhrag.mcp.server", "--collection", COLLECTION, "--qdrant-path", str(tmp_path / "q")],
        )
        async with stdio_client(server) as (read, write), ClientSession(read, write) as session:
            init = await session.initialize()
            assert init.serverInfo.name == "zhrag-knowledge"
            tools = {tool.name: tool for tool in (await session.list_tools()).tools}
            assert set(tools) == {"qdrant-find", "qdrant-store"}
            find_schema = tools["qdrant-find"].inputSchema
            assert find_schema["required"] == ["query"]
            assert find_schema["properties"]["query"]["type"] == "string"
            assert find_schema["properties"]["top_k"]["type"] == "integer"
            assert find_schema["properties"]["top_k"]["default"] == 5
            assert tools["qdrant-store"].inputSchema["required"] == ["information"]
            assert "metadata" in tools["qdrant-store"].inputSchema["properties"]
            assert tools["qdrant-find"].outputSchema is not None

            stored = await session.call_tool(
                "qdrant-store", {"information": "敦煌莫高窟位于甘肃省敦煌市。", "metadata": {"title": "莫高窟"}}
            )
            assert not stored.isError
            ids = stored.structuredContent["ids"]
            found = await session.call_tool("qdrant-find", {"query": "莫高窟在哪个省？", "top_k": 1})
            assert not found.isError
            (passage,) = found.structuredContent["result"]
            assert passage["id"] == ids[0] and passage["title"] == "莫高窟" and isinstance(passage["score"], float)
            assert json.loads(found.content[0].text) == passage

            rejected = await session.call_tool("qdrant-find", {"query": "莫高窟", "top_k": 0})
            assert rejected.isError and "top_k" in rejected.content[0].text
            again = await session.call_tool("qdrant-find", {"query": "莫高窟"})
            assert not again.isError and again.structuredContent["result"][0]["id"] == ids[0]

    asyncio.run(session_run())


def test_streamable_http_transport_serves_the_tools(tmp_path: Path):
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "zhrag.mcp.server", "--transport", "streamable-http", "--port", str(port),
         "--collection", COLLECTION, "--qdrant-path", str(tmp_path / "q"), "--read-only"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )

    async def list_tools() -> list[str]:
        deadline = time.monotonic() + 120
        while True:
            try:
                async with (
                    streamable_http_client(f"http://127.0.0.1:{port}/mcp") as (read, write, _),
                    ClientSession(read, write) as session,
                ):
                    await session.initialize()
                    return [tool.name for tool in (await session.list_tools()).tools]
            except Exception:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)

    try:
        assert asyncio.run(list_tools()) == ["qdrant-find"]  # --read-only hides qdrant-store
    finally:
        server.send_signal(signal.SIGINT)
        _, stderr = server.communicate(timeout=30)
    assert server.returncode == 0, stderr
    assert f"http://127.0.0.1:{port}/mcp" in stderr


@pytest.fixture
def shared_server(kb_source: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``zhrag serve-mcp --transport streamable-http`` with a bearer token, owning an embedded store of the tiny KB."""
    path = tmp_path / "shared-qdrant"
    with KnowledgeStore(COLLECTION, path=path) as store:
        index_sources(store, [kb_source], progress=False)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "zhrag.cli", "serve-mcp", "--transport", "streamable-http", "--port", str(port),
         "--collection", COLLECTION, "--qdrant-path", str(path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "ZHRAG_MCP_TOKEN": "t0ken"},
    )
    url = f"http://127.0.0.1:{port}/mcp"
    import httpx

    deadline = time.monotonic() + 120
    while True:
        try:
            httpx.get(url, timeout=2)
            break
        except httpx.HTTPError:
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the shared server did not come up: {server.communicate()[1][-2000:]}")
            time.sleep(0.5)
    try:
        yield url, path
    finally:
        server.send_signal(signal.SIGINT)
        server.communicate(timeout=30)


def test_one_http_knowledge_server_serves_many_clients_with_a_bearer_token(
    shared_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
):
    import httpx

    from zhrag.graph.context import Context
    from zhrag.nodes.retrieve import server_config

    url, path = shared_server
    hello = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        assert httpx.post(url, json=hello, headers=headers, timeout=10).status_code == 401

    monkeypatch.setenv("ZHRAG_MCP_TOKEN", "t0ken")
    launches = server_launches()
    config = server_config(Context(mcp_url=url))  # what the retrieve node asks for
    assert config.url == url
    first, second = get_knowledge_client(config), KnowledgeClient(ServerConfig(url=url))
    try:
        with ThreadPoolExecutor(max_workers=6) as pool:
            found = list(pool.map(lambda i: (first if i % 2 else second).find(QUERIES[i % 3][0], 2), range(12)))
        assert [passages[0]["title"] for passages in found] == [QUERIES[i % 3][1] for i in range(12)]
        with pytest.raises(MCPServerError, match="metadata\\['title'\\] is 201 characters long; the limit is 200"):
            first.store("敦煌莫高窟位于甘肃。", metadata={"title": "长" * 201})
        # The server owns the embedded store: a second opener is refused, the CLI goes through the server.
        cli = [sys.executable, "-m", "zhrag.cli", "search", "鲁迅的原名叫什么？", "--collection", COLLECTION, "--json"]
        direct = subprocess.run([*cli, "--qdrant-path", str(path)], capture_output=True, text=True, timeout=300)
        assert direct.returncode == 2 and len(direct.stderr.strip().splitlines()) == 1, direct.stderr
        shared = subprocess.run([*cli, "--mcp-url", url], capture_output=True, text=True, timeout=300)
        assert shared.returncode == 0, shared.stderr
        assert json.loads(shared.stdout)[0]["title"] == "鲁迅"
    finally:
        second.close()
        first.close()
    assert server_launches() == launches  # nothing was spawned


def test_the_http_server_refuses_a_public_address_without_a_token(tmp_path: Path):
    env = {name: value for name, value in os.environ.items() if name != "ZHRAG_MCP_TOKEN"}
    result = subprocess.run(
        [sys.executable, "-m", "zhrag.cli", "serve-mcp", "--transport", "streamable-http", "--host", "0.0.0.0",
         "--qdrant-path", str(tmp_path / "q")],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "zhrag-knowledge: error: serving on 0.0.0.0 needs a bearer token: set ZHRAG_MCP_TOKEN (clients send the same)"
    )
    assert not (tmp_path / "q").exists()
