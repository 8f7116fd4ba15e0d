"""Overlapping character windows that prefer sentence ends, with titles and stable ids."""

from __future__ import annotations

import pytest

from zhrag.errors import ConfigError
from zhrag.kb.chunking import chunk_document, split_text
from zhrag.kb.sources import Document

SENTENCES = [f"第{i}句话讲的是一件不同的事情，编号{i:03d}。" for i in range(40)]
LONG_TEXT = "".join(SENTENCES)


def test_short_text_is_one_chunk():
    assert split_text("一句话。", chunk_size=50, overlap=10) == ["一句话。"]


def test_windows_respect_size_end_at_sentence_ends_and_cover_every_sentence():
    windows = split_text(LONG_TEXT, chunk_size=120, overlap=30)
    assert len(windows) > 5
    assert all(len(window) <= 120 for window in windows)
    assert all(window.endswith("。") for window in windows)
    for sentence in SENTENCES:
        assert any(sentence in window for window in windows), sentence


def test_consecutive_windows_overlap():
    windows = split_text(LONG_TEXT, chunk_size=120, overlap=30)
    for previous, following in zip(windows, windows[1:], strict=False):
        shared = following[:10]
        assert shared in previous, (previous, following)
        assert previous.index(shared) > 0  # the next window moves forward


def test_text_without_sentence_ends_is_cut_at_the_size_with_exact_overlap():
    text = "".join(chr(0x4E00 + i) for i in range(250))
    windows = split_text(text, chunk_size=100, overlap=20)
    assert [len(w) for w in windows] == [100, 100, 90]
    assert windows[0][-20:] == windows[1][:20]
    assert windows[1][-20:] == windows[2][:20]
    assert windows[-1].endswith(text[-1])


@pytest.mark.parametrize(("size", "overlap"), [(0, 0), (100, 100), (100, -1), (50, 80)])
def test_invalid_parameters_raise_config_error(size, overlap):
    with pytest.raises(ConfigError):
        split_text(LONG_TEXT, chunk_size=size, overlap=overlap)


def test_chunks_keep_title_source_metadata_and_number_ids():
    document = Document(id="doc-7", title="测试标题", text=LONG_TEXT, source="kb.jsonl", metadata={"url": "u"})
    chunks = chunk_document(document, chunk_size=120, overlap=30)
    assert [c.id for c in chunks] == [f"doc-7#{n}" for n in range(len(chunks))]
    assert {(c.doc_id, c.title, c.source) for c in chunks} == {("doc-7", "测试标题", "kb.jsonl")}
    assert all(c.metadata == {"url": "u"} for c in chunks)
