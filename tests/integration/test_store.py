"""The knowledge store on real embedded Qdrant (Edge and qdrant-client local mode) with the default embedder (e5)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from zhrag import cli, settings
from zhrag.errors import ConfigError, KnowledgeBaseError, QdrantUnavailableError
from zhrag.kb import lexical
from zhrag.kb.indexing import (
    INDEXED,
    INDEXING,
    NOTES,
    add_document,
    ensure_index,
    index_documents,
    index_sources,
    index_state,
    source_names,
)
from zhrag.kb.migration import copy_collection
from zhrag.kb.retrieval import Retriever
from zhrag.kb.store import KnowledgeStore

pytestmark = pytest.mark.integration
ENGINES = ["edge", "local"]

TINY_KB = [
    {"id": "changcheng", "title": "长城", "text": "长城是中国古代的军事防御工程，明长城全长约8851千米，东起虎山，西至嘉峪关。"},
    {"id": "gugong", "title": "故宫", "text": "北京故宫是明清两代的皇家宫殿，旧称紫禁城，始建于明成祖永乐四年。"},
    {"id": "hongloumeng", "title": "红楼梦", "text": "《红楼梦》是清代作家曹雪芹创作的章回体长篇小说，又名《石头记》。"},
    {"id": "jiuming", "title": "九命奇冤", "text": "九命奇冤，清吴沃尧所著的小说。最初发表于梁启超主办的《新小说》杂志。"},
    {"id": "changjiang", "title": "长江", "text": "长江是亚洲第一长河，全长约6300公里，流经青海、西藏、四川等省区，在上海注入东海。"},
    {"id": "xiongmao", "title": "大熊猫", "text": "大熊猫是中国特有的熊科动物，主要以竹子为食，栖息在四川、陕西和甘肃的山区。"},
    {"id": "zuqiu", "title": "世界杯", "text": "2018年国际足联世界杯在俄罗斯举行，法国队在决赛中以四比二击败克罗地亚队夺冠。"},
    {"id": "dianhua", "title": "电话", "text": "亚历山大·格拉汉姆·贝尔于1876年获得了电话的美国专利。"},
]


def search(store: KnowledgeStore, query: str, top_k: int = 3, **options):
    return Retriever(store).search(query, top_k, **options)


@pytest.fixture
def kb_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.jsonl"
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in TINY_KB), encoding="utf-8")
    return path


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def store(tmp_path: Path, kb_file: Path, engine: str):
    with KnowledgeStore("tiny", path=tmp_path / "qdrant", engine=engine) as opened:
        index_sources(opened, [kb_file], batch_size=3, progress=False)
        yield opened


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("《九命奇冤》是由哪位作者所著？", "jiuming#0"),
        ("《红楼梦》的作者是谁？", "hongloumeng#0"),
        ("2018年世界杯冠军是哪支球队？", "zuqiu#0"),
        ("大熊猫主要吃什么？", "xiongmao#0"),
    ],
)
def test_the_answering_passage_ranks_first(store, question, expected):
    passages = search(store, question, top_k=3)
    assert len(passages) == 3
    assert passages[0]["id"] == expected
    assert passages[0]["score"] >= passages[1]["score"] >= passages[2]["score"]
    source = next(row for row in TINY_KB if f"{row['id']}#0" == expected)
    assert (passages[0]["title"], passages[0]["text"]) == (source["title"], source["text"])


def test_reindexing_is_idempotent(store, kb_file):
    assert store.count() == len(TINY_KB)
    settings_before = store.index_settings()
    report = index_sources(store, [kb_file], progress=False)
    assert (report.documents, report.chunks) == (len(TINY_KB), len(TINY_KB))
    assert store.count() == len(TINY_KB)
    assert store.index_settings() == settings_before


def test_added_text_is_found_and_avgdl_stays_fixed(store):
    avgdl = store.index_settings()["bm25"]["avgdl"]
    ids = add_document(store, "珠穆朗玛峰是世界最高峰，海拔8848.86米，位于中国与尼泊尔边境。", title="珠穆朗玛峰", metadata={"by": "test"})
    assert len(ids) == 1
    assert store.count() == len(TINY_KB) + 1
    assert search(store, "世界最高峰的海拔是多少米？", top_k=1)[0]["id"] == ids[0]
    assert add_document(store, "珠穆朗玛峰是世界最高峰，海拔8848.86米，位于中国与尼泊尔边境。", title="珠穆朗玛峰") == ids
    assert store.count() == len(TINY_KB) + 1
    assert store.index_settings()["bm25"]["avgdl"] == avgdl


def test_long_documents_are_chunked_with_their_title(store):
    text = "。".join(f"第{i}段记录了运河沿岸城市{i}的历史与风俗" for i in range(60)) + "。"
    ids = add_document(store, text, title="京杭大运河", doc_id="canal")
    assert len(ids) > 1
    assert ids == [f"canal#{n}" for n in range(len(ids))]
    hit = search(store, "京杭大运河沿岸城市59的历史", top_k=1)[0]
    assert hit["id"] in ids
    assert hit["title"] == "京杭大运河"


def test_evidence_reranking_attaches_windows_and_can_be_turned_off(store):
    question = "《九命奇冤》是由哪位作者所著？"
    reranked = search(store, question, top_k=3)
    assert reranked[0]["id"] == "jiuming#0"
    assert all(p["evidence"] and p["evidence"] in p["text"] for p in reranked)
    plain = search(store, question, top_k=3, reranker="none")
    assert all("evidence" not in p for p in plain)
    assert plain[0]["score"] <= 1.0 + store.dense_weight  # weighted RRF: at most 1/rank 1 per list
    assert reranked[0]["score"] > 1.0 and reranked[0]["score"] != plain[0]["score"]  # RRF share + 2 x coverage
    # the fused candidates are the same passages whatever the dense weight; BM25 leads at weight 0
    assert search(store, question, top_k=1, dense_weight=0.0, reranker="none")[0]["id"] == "jiuming#0"
    with pytest.raises(ConfigError, match="dense_weight"):
        search(store, question, dense_weight=-1)


def test_dense_only_and_bm25_only_modes(store):
    bm25 = search(store, "《九命奇冤》是由哪位作者所著？", top_k=3, mode="sparse", reranker="none")
    assert bm25[0]["id"] == "jiuming#0" and bm25[0]["score"] > 1.0  # a BM25 score, not an RRF one
    assert all(p["score"] > 0 for p in bm25)
    dense = search(store, "《九命奇冤》是由哪位作者所著？", top_k=3, mode="dense", reranker="none")
    assert len(dense) == 3 and all(-1.0 <= p["score"] <= 1.0 for p in dense)
    assert search(store, "什么？", top_k=3, mode="sparse") == []  # stop words only: no BM25 terms
    with pytest.raises(ConfigError, match="unknown search mode 'bm25'"):
        search(store, "长江", mode="bm25")


@pytest.mark.parametrize("query", ["", "   "])
def test_empty_query_is_rejected(store, query):
    with pytest.raises(ConfigError, match="empty query"):
        search(store, query)


def test_second_client_on_the_same_path_gets_a_clear_error(store):
    with pytest.raises(QdrantUnavailableError, match=rf"{store.location} is locked: another process"):
        KnowledgeStore("tiny", path=store.location, engine=store.engine)


@pytest.mark.parametrize("engine", ENGINES)
def test_lock_is_released_on_close_and_metadata_persists(tmp_path, kb_file, engine):
    path = tmp_path / "qdrant"
    with KnowledgeStore("tiny", path=path, engine=engine) as first:
        index_sources(first, [kb_file], progress=False)
        written = first.index_settings()
        top = search(first, "长江有多长？", top_k=2)
    assert written["embedder"] == settings.DEFAULT_EMBEDDER and written["dimension"] == 384
    assert written["bm25"]["avgdl"] > 1 and (written["bm25"]["k1"], written["bm25"]["b"]) == (lexical.K1, lexical.B)
    with KnowledgeStore("tiny", path=path, engine=engine) as second:
        assert second.count() == len(TINY_KB)
        assert second.index_settings() == written
        assert search(second, "长江有多长？", top_k=2) == top


@pytest.mark.parametrize("engine", ENGINES)
def test_other_embedder_than_the_indexed_one_is_refused(tmp_path, kb_file, engine):
    path = tmp_path / "qdrant"
    with KnowledgeStore("tiny", path=path, engine=engine) as first:
        index_sources(first, [kb_file], progress=False)
    with KnowledgeStore("tiny", path=path, embedder="BAAI/bge-small-zh-v1.5", engine=engine) as other:
        with pytest.raises(KnowledgeBaseError, match=f"indexed with embedder '{settings.DEFAULT_EMBEDDER}'"):
            search(other, "长城有多长？")
        with pytest.raises(KnowledgeBaseError, match=f"indexed with embedder '{settings.DEFAULT_EMBEDDER}'"):
            add_document(other, "新的段落。")


@pytest.mark.parametrize("engine", ENGINES)
def test_missing_collection_and_empty_corpus_are_knowledge_base_errors(tmp_path, engine):
    with KnowledgeStore("absent", path=tmp_path / "qdrant", engine=engine) as empty:
        assert empty.count() == 0 and not empty.exists()
        with pytest.raises(KnowledgeBaseError, match="'absent' does not exist"):
            search(empty, "长城有多长？")
        with pytest.raises(KnowledgeBaseError, match="empty corpus"):
            index_documents(empty, [])
        assert not empty.exists()


def test_ensure_index_only_indexes_an_empty_collection(tmp_path, kb_file):
    with KnowledgeStore("tiny", path=tmp_path / "qdrant") as fresh:
        report = ensure_index(fresh, kb_file, progress=False)
        assert report is not None and report.chunks == len(TINY_KB)
        assert ensure_index(fresh, kb_file, progress=False) is None


NOTE = "珠穆朗玛峰是世界最高峰，海拔8848.86米，位于中国与尼泊尔边境。"


def test_a_note_stored_before_first_use_does_not_stop_the_knowledge_base_from_being_indexed(tmp_path, kb_file):
    """qdrant-store into a missing collection used to make ensure_index skip the KB (count() > 0) with the
    note's avgdl; now the collection is in state notes, first use indexes the KB and re-weights the note."""
    with KnowledgeStore("tiny", path=tmp_path / "reference") as reference:
        index_sources(reference, [kb_file], progress=False)
        add_document(reference, NOTE, title="珠穆朗玛峰")
        expected = search(reference, "世界最高峰的海拔是多少米？", top_k=3, mode="sparse", reranker="none")
        expected_bm25 = reference.index_settings()["bm25"]
    with KnowledgeStore("tiny", path=tmp_path / "qdrant") as store:
        (note_id,) = add_document(store, NOTE, title="珠穆朗玛峰")
        assert index_state(store) == NOTES and store.count() == 1
        report = ensure_index(store, kb_file, progress=False)
        assert report is not None and report.chunks == len(TINY_KB)
        assert store.count() == len(TINY_KB) + 1 and index_state(store) == INDEXED
        assert store.index_settings()["bm25"] == expected_bm25
        assert store.index_settings()["sources"] == source_names([kb_file])
        got = search(store, "世界最高峰的海拔是多少米？", top_k=3, mode="sparse", reranker="none")
        assert got[0]["id"] == note_id
        assert [p["id"] for p in got] == [p["id"] for p in expected]
        assert [p["score"] for p in got] == pytest.approx([p["score"] for p in expected])
        assert ensure_index(store, kb_file, progress=False) is None


def test_an_interrupted_first_use_is_finished_and_other_sources_are_left_alone(tmp_path, kb_file, monkeypatch, caplog):
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"id": "x", "text": "西湖位于杭州。"}, ensure_ascii=False) + "\n", encoding="utf-8")
    with KnowledgeStore("tiny", path=tmp_path / "qdrant") as store:
        with monkeypatch.context() as patched:
            def killed(*args, **kwargs):
                raise KeyboardInterrupt

            patched.setattr(store, "flush", killed)
            with pytest.raises(KeyboardInterrupt):
                index_sources(store, [kb_file], batch_size=3, progress=False)
        assert index_state(store) == INDEXING and store.index_settings()[INDEXING] == source_names([kb_file])
        with caplog.at_level(logging.WARNING, logger="zhrag.kb.indexing"):
            assert ensure_index(store, other, progress=False) is None  # not the interrupted sources
        assert "unfinished indexing run" in caplog.text and index_state(store) == INDEXING
        report = ensure_index(store, kb_file, progress=False)
        assert report is not None and store.count() == len(TINY_KB) and index_state(store) == INDEXED
        assert store.index_settings()[INDEXING] == []


def test_collections_without_a_recorded_state_count_as_indexed_when_they_hold_points(tmp_path, kb_file):
    with KnowledgeStore("tiny", path=tmp_path / "qdrant") as store:
        index_sources(store, [kb_file], progress=False)
        legacy = {key: value for key, value in store.index_settings().items() if key not in ("state", "sources", INDEXING)}
        store._backend.set_metadata(legacy)  # as written before the indexing state existed
        assert index_state(store) == INDEXED and ensure_index(store, kb_file, progress=False) is None
        assert ensure_index(store, kb_file, progress=False, dense=True) is None  # its vectors are all there


def test_malformed_source_writes_nothing(tmp_path, kb_file):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "有效。"}\n{oops\n', encoding="utf-8")
    with KnowledgeStore("tiny", path=tmp_path / "qdrant") as fresh:
        with pytest.raises(KnowledgeBaseError, match=r"bad\.jsonl:2"):
            index_sources(fresh, [kb_file, bad], progress=False)
        assert fresh.count() == 0


def test_acceptance_question_on_real_kb_passages(tmp_path, kb_subset):
    """The issue's acceptance check on a slice of the shared KB (the full KB takes minutes to embed)."""
    with KnowledgeStore("subset", path=tmp_path / "qdrant") as store:
        report = index_sources(store, [kb_subset], progress=False)
        assert report.chunks >= report.documents > 100
        top = search(store, "《九命奇冤》是由哪位作者所著？", top_k=3)
    assert "吴沃尧" in top[0]["text"]
    assert top[0]["title"] == "九命奇冤"


def test_negative_dense_weight_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match="dense_weight"):
        KnowledgeStore(path=tmp_path / "qdrant", dense_weight=-1.0)


def test_unreachable_server_names_the_url():
    url = "http://127.0.0.1:9"
    with pytest.raises(QdrantUnavailableError, match=rf"Qdrant server at {url} is unreachable"):
        KnowledgeStore(url=url)


def test_edge_and_local_collections_live_side_by_side(tmp_path, kb_file):
    path = tmp_path / "qdrant"
    with KnowledgeStore("tiny", path=path, engine="local") as local:
        index_sources(local, [kb_file], progress=False)
    with KnowledgeStore("tiny", path=path) as edge:
        assert edge.engine == "edge" and edge.count() == 0  # the local collection is not converted
        report = index_sources(edge, [kb_file], progress=False)
        assert report.chunks == edge.count() == len(TINY_KB)
        metadata = json.loads((path / "edge" / "tiny" / "zhrag_index.json").read_text(encoding="utf-8"))
        assert metadata == edge.index_settings()
    with KnowledgeStore("tiny", path=path, engine="local") as local:
        assert local.count() == len(TINY_KB)
        assert search(local, "《红楼梦》的作者是谁？", top_k=1)[0]["id"] == "hongloumeng#0"


def test_copy_from_local_reproduces_local_rankings(tmp_path, kb_file, caplog):
    path = tmp_path / "qdrant"
    questions = ["《九命奇冤》是由哪位作者所著？", "长江流经哪些省区？", "电话是谁发明的？", "故宫旧称什么？"]
    with KnowledgeStore("tiny", path=path, engine="local") as local:
        index_sources(local, [kb_file], progress=False)
        expected = [search(local, question, top_k=5) for question in questions]
    with (
        caplog.at_level(logging.WARNING, logger="zhrag.kb.store"),
        KnowledgeStore("tiny", path=path, engine="local") as local,
        KnowledgeStore("tiny", path=path, engine="edge") as edge,
    ):
        assert "zhrag index --from-local" in caplog.text
        assert copy_collection(local, edge) == len(TINY_KB)
        assert edge.index_settings() == local.index_settings()
        assert copy_collection(local, edge) == len(TINY_KB)  # idempotent
        assert edge.count() == len(TINY_KB)
        got = [search(edge, question, top_k=5) for question in questions]
    for mine, theirs in zip(got, expected, strict=True):
        assert [p["id"] for p in mine] == [p["id"] for p in theirs]
        assert [p["score"] for p in mine] == pytest.approx([p["score"] for p in theirs])


def test_cli_index_from_local_copies_into_the_edge_shard(tmp_path, kb_file, capsys):
    path = tmp_path / "qdrant"
    assert cli.main(["index", str(kb_file), "--collection", "tiny", "--qdrant-path", str(path),
                     "--qdrant-engine", "local"]) == 0
    assert cli.main(["index", "--from-local", "--collection", "tiny", "--qdrant-path", str(path)]) == 0
    assert f"copied {len(TINY_KB)} points" in capsys.readouterr().out
    with KnowledgeStore("tiny", path=path, engine="edge") as edge:
        assert search(edge, "大熊猫主要吃什么？", top_k=1)[0]["id"] == "xiongmao#0"
    assert cli.main(["index", "--collection", "tiny", "--qdrant-path", str(path)]) == 2
    assert "nothing to index" in capsys.readouterr().err
