"""Reading a GGUF file's chat template from its header alone, against files written by the gguf package."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFReader, GGUFWriter

from zhrag.errors import ModelLoadError
from zhrag.models.llamacpp import gguf_chat_template

TEMPLATE = "{% for message in messages %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>{% endfor %}"


def write_gguf(path: Path, template: str | None) -> Path:
    """A small GGUF file with every kind of metadata value before the template (and a tensor after it)."""
    writer = GGUFWriter(str(path), "llama")
    writer.add_block_count(2)
    writer.add_float32("test.scale", 0.5)
    writer.add_bool("test.flag", True)
    writer.add_uint64("test.big", 2**40)
    writer.add_token_list(["<s>", "</s>", "长城", "x" * 300])  # an array of strings
    writer.add_token_scores([0.0, -1.0, -2.5, -3.0])  # an array of floats
    writer.add_array("test.nested", [[1, 2], [3]])  # an array of arrays
    if template is not None:
        writer.add_chat_template(template)
    writer.add_string("test.after", "值")
    writer.add_tensor("w", np.zeros((2, 3), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize("template", [TEMPLATE, None])
def test_the_chat_template_is_read_as_the_gguf_package_reads_it(tmp_path: Path, template: str | None):
    path = write_gguf(tmp_path / "model.gguf", template)
    field = GGUFReader(str(path)).fields.get("tokenizer.chat_template")
    expected = bytes(field.parts[field.data[0]]).decode() if field is not None else None
    assert gguf_chat_template(path) == expected == template


def test_a_file_that_is_not_gguf_is_a_model_load_error(tmp_path: Path):
    text = tmp_path / "model.gguf"
    text.write_text("not a model", encoding="utf-8")
    with pytest.raises(ModelLoadError, match="cannot read GGUF file .*no GGUF magic number"):
        gguf_chat_template(text)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(write_gguf(tmp_path / "whole.gguf", TEMPLATE).read_bytes()[:60])
    with pytest.raises(ModelLoadError, match="cannot read GGUF file"):
        gguf_chat_template(cut)
