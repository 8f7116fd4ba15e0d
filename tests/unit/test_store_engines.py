"""Engine choice and the Qdrant Edge backend, on tiny hand-made vectors (no embedder, no model)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from qdrant_client import models
from qdrant_client.hybrid.fusion import reciprocal_rank_fusion

from zhrag import settings
from zhrag.errors import ConfigError, QdrantUnavailableError
from zhrag.graph.context import Context
from zhrag.kb.qdrant_backends import ClientBackend, PointData, local_collection_exists
from zhrag.kb.qdrant_edge_backend import EdgeBackend, shard_directory, weighted_rrf
from zhrag.kb.store import KnowledgeStore
from zhrag.mcp.client import ServerConfig
from zhrag.mcp.server import ServerSettings, parse_args

METADATA = {"embedder": "toy", "dimension": 4, "bm25": {"avgdl": 3.0, "k1": 1.2, "b": 0.75}}


def toy_point(name: str, dense: list[float], terms: dict[int, float]) -> PointData:
    """A point with a uuid5 id, a 4-d dense vector and a sparse vector."""
    indices = sorted(terms)
    return PointData(
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, name)),
        dense=dense,
        sparse_indices=indices,
        sparse_values=[terms[i] for i in indices],
        payload={"chunk_id": name, "title": name, "text": f"text of {name}"},
    )


TOY = [
    toy_point("a", [1.0, 0.0, 0.0, 0.0], {1: 1.0, 2: 0.5}),
    toy_point("b", [0.0, 1.0, 0.0, 0.0], {2: 1.0, 3: 1.0}),
    toy_point("c", [0.0, 0.0, 1.0, 0.0], {3: 0.7}),
    toy_point("d", [0.7, 0.7, 0.0, 0.0], {4: 1.0}),
]


@pytest.fixture
def edge_backend(tmp_path: Path):
    backend = EdgeBackend(tmp_path / "q", "toy")
    yield backend
    backend.close()


def ids(hits) -> list[str]:
    return [hit.payload["chunk_id"] for hit in hits]


def test_weighted_rrf_matches_qdrant_client_local_mode_including_ties():
    rng = random.Random(0)
    for _ in range(200):
        pool = [f"p{i}" for i in range(30)]
        lists = [rng.sample(pool, rng.randint(0, 25)) for _ in range(2)]
        weights = [1.0, rng.choice([0.2, 0.5, 1.0, 3.0])]
        responses = [[models.ScoredPoint(id=i, version=0, score=0.0) for i in ids_] for ids_ in lists]
        expected = reciprocal_rank_fusion(responses, limit=5, ranking_constant_k=2, weights=weights)
        fused = weighted_rrf(lists, weights, 5)
        assert [point for point, _ in fused] == [point.id for point in expected]
        assert [score for _, score in fused] == pytest.approx([point.score for point in expected])


def test_weighted_rrf_breaks_the_structural_tie_in_favour_of_bm25():
    # k=2, dense weight 0.2: BM25 rank 5 scores 1/6, exactly as dense rank 1 does.
    fused = weighted_rrf([["s1", "s2", "s3", "s4", "s5"], ["d1"]], [1.0, 0.2], 5)
    assert fused[-1] == ("s5", pytest.approx(1 / 6))
    assert dict(weighted_rrf([["s5"], ["d1"]], [1.0, 0.2], 2)) == pytest.approx({"s5": 1 / 2, "d1": 1 / 6})


def test_edge_backend_creates_searches_and_reopens(tmp_path: Path, edge_backend: EdgeBackend):
    assert not edge_backend.exists() and edge_backend.count() == 0 and edge_backend.metadata() is None
    assert edge_backend.search([1.0, 0, 0, 0], ([1], [1.0]), limit=2, prefetch=10, dense_weight=1.0) == []
    edge_backend.create(4, METADATA)
    directory = tmp_path / "q" / "edge" / "toy"
    assert json.loads((directory / "zhrag_index.json").read_text()) == METADATA
    assert not list(directory.glob(".zhrag_index.json.*"))  # no temporary file left
    edge_backend.upsert(TOY)
    edge_backend.upsert(TOY[:2])  # same ids: overwritten, not added
    edge_backend.flush(optimize=True)
    assert edge_backend.count() == len(TOY) and edge_backend.metadata() == METADATA

    hits = edge_backend.search([0.0, 1.0, 0.0, 0.0], ([3], [1.0]), limit=3, prefetch=10, dense_weight=1.0)
    assert ids(hits)[0] == "b"  # first in both lists
    assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)
    assert hits[0].payload == TOY[1].payload
    dense_only = edge_backend.search([0.0, 0.0, 1.0, 0.0], ([], []), limit=1, prefetch=10, dense_weight=0.2)
    assert ids(dense_only) == ["c"] and dense_only[0].score == pytest.approx(0.5)  # plain RRF, rank 1: 1/(0+2)

    edge_backend.close()
    reopened = EdgeBackend(tmp_path / "q", "toy")
    try:
        assert reopened.count() == len(TOY) and reopened.metadata() == METADATA
        (copied,) = list(reopened.scroll(100))
        assert sorted(p.payload["chunk_id"] for p in copied) == ["a", "b", "c", "d"]
        assert {p.id: p.sparse_indices for p in copied} == {p.id: p.sparse_indices for p in TOY}
    finally:
        reopened.close()


def test_edge_idf_and_fusion_agree_with_local_mode(tmp_path: Path, edge_backend: EdgeBackend):
    local = ClientBackend("toy", path=str(tmp_path / "local"))
    try:
        for backend in (local, edge_backend):
            backend.create(4, METADATA)
            backend.upsert(TOY)
            backend.flush()
        # No exact ties inside a list: engines order equal scores differently.
        for dense, terms in [([0.1, 1.0, 0.2, 0.0], [3]), ([0.6, 0.8, 0.1, 0.0], [2, 4]), ([0.2, 0.1, 0.3, 1.0], [1])]:
            sparse = (terms, [1.0] * len(terms))
            cases = [((dense, sparse), 1.0), ((dense, sparse), 0.2), ((dense, None), 1.0), ((None, sparse), 1.0)]
            for query, weight in cases:
                expected = local.search(*query, limit=4, prefetch=4, dense_weight=weight)
                got = edge_backend.search(*query, limit=4, prefetch=4, dense_weight=weight)
                assert ids(got) == ids(expected) and got
                assert [h.score for h in got] == pytest.approx([h.score for h in expected], rel=1e-5)
        for backend in (local, edge_backend):
            assert backend.search(None, ([], []), limit=3, prefetch=3, dense_weight=1.0) == []
    finally:
        local.close()


def test_a_second_opener_gets_the_locked_error(tmp_path: Path, edge_backend: EdgeBackend):
    with pytest.raises(QdrantUnavailableError, match=rf"storage {tmp_path / 'q'} is locked: another process"):
        EdgeBackend(tmp_path / "q", "toy")
    with pytest.raises(QdrantUnavailableError, match="is locked"):
        EdgeBackend(tmp_path / "q", "other")  # one store per Qdrant path, as in local mode
    edge_backend.create(4, METADATA)
    edge_backend.upsert(TOY)
    # Edge's own lock on the shard's write-ahead log, seen by a raw opener in another process.
    script = "import sys, qdrant_edge as q\ntry:\n q.EdgeShard.load(sys.argv[1])\nexcept Exception as e:\n print(e)"
    raw = subprocess.run([sys.executable, "-c", script, str(edge_backend.directory)], capture_output=True, text=True)
    assert "WouldBlock" in raw.stdout


def test_metadata_without_shard_heals_on_first_upsert(tmp_path: Path):
    directory = shard_directory(tmp_path / "q", "toy")
    directory.mkdir(parents=True)
    (directory / "zhrag_index.json").write_text(json.dumps(METADATA))  # as if killed right after writing it
    backend = EdgeBackend(tmp_path / "q", "toy")
    try:
        assert backend.exists() and backend.count() == 0
        backend.upsert(TOY[:1])
        assert backend.count() == 1
    finally:
        backend.close()


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a\\b"])
def test_collection_names_that_are_not_directory_names_are_refused(tmp_path: Path, name: str):
    with pytest.raises(ConfigError, match="cannot name an Edge shard directory"):
        shard_directory(tmp_path, name)


def test_local_collection_is_detected_without_opening_it(tmp_path: Path):
    assert not local_collection_exists(tmp_path, "toy")
    local = ClientBackend("toy", path=str(tmp_path))
    try:
        local.create(4, METADATA)
        assert local_collection_exists(tmp_path, "toy") and not local_collection_exists(tmp_path, "other")
    finally:
        local.close()


def test_engine_setting_flows_from_env_to_store_context_and_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("ZHRAG_QDRANT_ENGINE", raising=False)
    assert settings.qdrant_engine() == "edge" and Context().qdrant_engine == "edge"
    monkeypatch.setenv("ZHRAG_QDRANT_ENGINE", "Local")
    assert settings.qdrant_engine() == "local" and Context().qdrant_engine == "local"
    with KnowledgeStore("toy", path=tmp_path / "q") as store:
        assert store.engine == "local" and store.count() == 0
    assert (tmp_path / "q" / "meta.json").is_file()
    with KnowledgeStore("toy", path=tmp_path / "q", engine="edge") as store:
        assert store.engine == "edge" and store.location == str(tmp_path / "q")

    assert parse_args([], {"ZHRAG_QDRANT_ENGINE": "local"}).qdrant_engine == "local"
    assert parse_args(["--qdrant-engine", "local"], {}).qdrant_engine == "local"
    assert parse_args([], {}).qdrant_engine == "edge"
    command = ServerConfig(qdrant_path="/q", qdrant_engine="local").launch_command()
    assert parse_args(command[3:], {}) == ServerSettings(qdrant_path="/q", qdrant_engine="local")
    assert "--qdrant-engine" not in ServerConfig(qdrant_url="http://q:6333").launch_command()


def test_unknown_engine_is_a_config_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="unknown Qdrant engine 'rocks'"):
        KnowledgeStore(path=tmp_path / "q", engine="rocks")
    with pytest.raises(ConfigError, match="unknown Qdrant engine"):
        Context(qdrant_engine="rocks")
    with pytest.raises(ConfigError, match="unknown Qdrant engine"):
        ServerSettings(qdrant_engine="rocks")


def test_a_server_collection_gets_the_large_knowledge_base_layout(monkeypatch: pytest.MonkeyPatch):
    from zhrag.kb.qdrant_backends import collection_config

    class Recorder:
        def create_collection(self, name: str, **arguments) -> None:
            self.created = (name, arguments)

    backend = object.__new__(ClientBackend)
    backend.collection, backend.engine, backend._client = "kb", "server", Recorder()
    monkeypatch.setenv("ZHRAG_QDRANT_SHARDS", "3")
    backend.create(384, {"embedder": "e5"})
    name, arguments = backend._client.created
    body = {{"vectors_config": "vectors", "sparse_vectors_config": "sparse_vectors"}.get(k, k): v for k, v in arguments.items()}
    request = models.CreateCollection(**body)  # what qdrant-client sends the server: a valid request body
    assert name == "kb" and arguments["metadata"] == {"zhrag": {"embedder": "e5"}}
    assert request.vectors["dense"].on_disk and request.vectors["dense"].size == 384
    assert request.sparse_vectors["bm25"].index.on_disk and request.on_disk_payload
    assert request.quantization_config.scalar.type == models.ScalarType.INT8
    assert request.quantization_config.scalar.always_ram
    assert (request.hnsw_config.m, request.hnsw_config.ef_construct) == (16, 100)
    assert (request.shard_number, request.replication_factor) == (3, 1)
    # Embedded local mode keeps the plain layout (it has no HNSW, quantization or disk tiers).
    assert set(collection_config(384)) == {"vectors_config", "sparse_vectors_config"}
    monkeypatch.setenv("ZHRAG_QDRANT_REPLICAS", "two")
    with pytest.raises(ConfigError, match="ZHRAG_QDRANT_REPLICAS must be a positive integer, got 'two'"):
        collection_config(384, server=True)
