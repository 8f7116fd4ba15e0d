"""Every knowledge-base source format, malformed input with file and line, empty sources."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zhrag.errors import KnowledgeBaseError
from zhrag.kb.sources import iter_documents


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def test_jsonl_fields_source_and_metadata(tmp_path):
    path = write_jsonl(
        tmp_path / "kb.jsonl",
        [
            {"id": "a1", "title": "长江", "text": "长江是中国第一长河。", "source": "wiki", "url": "https://x"},
            {"id": 7, "text": "黄河是中国第二长河。"},
        ],
    )
    first, second = iter_documents(path)
    assert (first.id, first.title, first.text, first.source, first.metadata) == (
        "a1", "长江", "长江是中国第一长河。", "wiki", {"url": "https://x"}
    )
    assert (second.id, second.title, second.source, second.metadata) == ("7", "", "kb.jsonl", {})


def test_documents_without_id_get_stable_content_ids(tmp_path):
    path = write_jsonl(tmp_path / "kb.jsonl", [{"text": "甲。"}, {"text": "乙。"}])
    ids = [d.id for d in iter_documents(path)]
    assert ids == [d.id for d in iter_documents(path)]
    assert len(set(ids)) == 2
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    write_jsonl(moved / "kb.jsonl", [{"text": "甲。"}, {"text": "乙。"}])
    assert [d.id for d in iter_documents(moved / "kb.jsonl")] == ids  # ids do not depend on the folder


def test_blank_lines_and_blank_texts_are_skipped(tmp_path):
    path = tmp_path / "kb.jsonl"
    path.write_text('{"text": "甲。"}\n\n   \n{"text": "  "}\n{"text": "乙。"}\n', encoding="utf-8")
    assert [d.text for d in iter_documents(path)] == ["甲。", "乙。"]


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    path = tmp_path / "kb.jsonl"
    path.write_text('{"text": "甲。"}\n\n{"text": "乙。"\n{"text": "丙。"}\n', encoding="utf-8")
    with pytest.raises(KnowledgeBaseError, match=rf"{path}:3: malformed JSON line"):
        list(iter_documents(path))


@pytest.mark.parametrize("line", ['["not", "an", "object"]', '{"title": "no text"}', '{"text": 3}'])
def test_jsonl_record_without_text_names_the_line(tmp_path, line):
    path = tmp_path / "kb.jsonl"
    path.write_text('{"text": "甲。"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(KnowledgeBaseError, match=r"kb\.jsonl:2: .*'text'"):
        list(iter_documents(path))


def test_plain_text_file_is_one_document_titled_by_its_stem(tmp_path):
    path = tmp_path / "红楼梦.txt"
    path.write_text("第一段。\n\n第二段。\n", encoding="utf-8")
    (document,) = iter_documents(path)
    assert (document.title, document.text, document.source) == ("红楼梦", "第一段。\n\n第二段。", "红楼梦.txt")


def test_non_utf8_text_is_a_knowledge_base_error(tmp_path):
    path = tmp_path / "gbk.txt"
    path.write_bytes("中文内容".encode("gbk"))
    with pytest.raises(KnowledgeBaseError, match="not UTF-8"):
        list(iter_documents(path))


def make_wikiextractor_output(root: Path) -> Path:
    (root / "AA").mkdir(parents=True)
    (root / "AB").mkdir()
    (root / "AA" / "wiki_00").write_text(
        '<doc id="13" url="https://zh.wikipedia.org/wiki?curid=13" title="数学">\n数学\n\n'
        "数学是研究数量、结构以及空间等概念的一门学科。\n\n它是基础学科。\n</doc>\n"
        '<doc id="18" url="https://zh.wikipedia.org/wiki?curid=18" title="空页">\n空页\n</doc>\n'
        '<doc id="21" url="https://zh.wikipedia.org/wiki?curid=21" title="A&amp;B">\nA&amp;B\n\nA与B。\n</doc>\n',
        encoding="utf-8",
    )
    row = {"id": "25", "url": "https://zh.wikipedia.org/wiki?curid=25", "title": "物理学", "text": "物理学研究物质。"}
    (root / "AB" / "wiki_00").write_text(json.dumps(row, ensure_ascii=False) + "\n", encoding="utf-8")
    return root


def test_wikiextractor_directory_with_doc_blocks_and_json_lines(tmp_path):
    documents = list(iter_documents(make_wikiextractor_output(tmp_path / "extracted")))
    assert [(d.id, d.title) for d in documents] == [("13", "数学"), ("21", "A&B"), ("25", "物理学")]
    math = documents[0]
    assert math.text == "数学是研究数量、结构以及空间等概念的一门学科。\n它是基础学科。"
    assert math.metadata == {"url": "https://zh.wikipedia.org/wiki?curid=13"}
    assert math.source == "AA/wiki_00"
    assert documents[2].metadata == {"url": "https://zh.wikipedia.org/wiki?curid=25"}


def test_wikiextractor_file_given_directly(tmp_path):
    root = make_wikiextractor_output(tmp_path / "extracted")
    assert [d.id for d in iter_documents(root / "AA" / "wiki_00")] == ["13", "21"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('<doc id="1" title="甲">\n甲文。\n', r"wiki_00:1: <doc> is never closed"),
        ('<doc id="1" title="甲">\n甲文。\n<doc id="2" title="乙">\n</doc>\n', r"wiki_00:3: <doc> opened"),
        ('<doc id="1" title="甲">\n甲文。\n</doc>\n</doc>\n', r"wiki_00:4: </doc> without"),
    ],
)
def test_malformed_wikiextractor_file_names_the_line(tmp_path, content, message):
    (tmp_path / "AA").mkdir()
    (tmp_path / "AA" / "wiki_00").write_text(content, encoding="utf-8")
    with pytest.raises(KnowledgeBaseError, match=message):
        list(iter_documents(tmp_path))


def test_squad_json_one_document_per_paragraph(tmp_path):
    squad = {
        "version": "v1.0",
        "data": [
            {
                "title": "长城",
                "paragraphs": [
                    {"id": "DEV_1", "context": "长城是古代军事工程。", "qas": []},
                    {"context": "长城全长两万多公里。", "qas": []},
                ],
            },
            {"title": "故宫", "paragraphs": [{"context": "故宫位于北京。", "qas": []}]},
        ],
    }
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(squad, ensure_ascii=False), encoding="utf-8")
    documents = list(iter_documents(path))
    assert [(d.title, d.text) for d in documents] == [
        ("长城", "长城是古代军事工程。"),
        ("长城", "长城全长两万多公里。"),
        ("故宫", "故宫位于北京。"),
    ]
    assert documents[0].id == "DEV_1"
    assert len({d.id for d in documents}) == 3


@pytest.mark.parametrize(
    ("content", "message"),
    [('{"data": [', r"dev\.json:1: malformed JSON"), ('{"version": 1}', "not a SQuAD-style file")],
)
def test_malformed_squad_json(tmp_path, content, message):
    path = tmp_path / "dev.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(KnowledgeBaseError, match=message):
        list(iter_documents(path))


def test_directory_is_walked_for_supported_files_only(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"id": "j", "text": "甲。"}])
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("乙。", encoding="utf-8")
    (tmp_path / "notes.csv").write_text("x,y\n", encoding="utf-8")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "c.txt").write_text("丙。", encoding="utf-8")
    documents = list(iter_documents(tmp_path))
    assert [(d.text, d.source) for d in documents] == [("甲。", "a.jsonl"), ("乙。", "sub/b.txt")]


def test_missing_source(tmp_path):
    with pytest.raises(KnowledgeBaseError, match="source not found"):
        list(iter_documents(tmp_path / "nope.jsonl"))


@pytest.mark.parametrize("name", ["empty.jsonl", "empty.txt", "folder"])
def test_empty_sources_are_an_empty_corpus(tmp_path, name):
    path = tmp_path / name
    if name == "folder":
        path.mkdir()
        (path / "ignored.csv").write_text("x\n", encoding="utf-8")
    else:
        path.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(KnowledgeBaseError, match="empty corpus"):
        list(iter_documents(path))


def test_unsupported_file_given_directly(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("a,b\n", encoding="utf-8")
    with pytest.raises(KnowledgeBaseError, match="unsupported format"):
        list(iter_documents(path))


def test_shared_kb_reads_every_line_with_unique_ids(shared_kb):
    lines = [line for line in shared_kb.read_text(encoding="utf-8").splitlines() if line.strip()]
    documents = list(iter_documents(shared_kb))
    assert len(documents) == len(lines)
    assert len({d.id for d in documents}) == len(documents)
    assert all(d.text and d.source for d in documents)
