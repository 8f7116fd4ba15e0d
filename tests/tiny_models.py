"""Tiny random causal language models with a real tokenizer, for plumbing checks that need no real weights.

Smoke runs of the benchmarks and the model/training tests use them where a code path (padding, stop
strings, adapters, batching) must run through real transformers objects in milliseconds. They say nothing
about answer quality: the packaged Gemma-3-270M stands in for that.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

#: Chinese reading-comprehension lines the tokenizers are trained on by default.
DEFAULT_CORPUS = (
    "材料：曹雪芹，清代小说家，著有《红楼梦》。\n问题：《红楼梦》的作者是谁？\n答案：曹雪芹",
    "材料：北京是中华人民共和国的首都。\n问题：中国的首都是哪里？\n答案：北京",
)


def bpe_tokenizer(
    corpus: Sequence[str],
    *,
    vocab_size: int = 400,
    pad: str = "<pad>",
    bos: str = "<s>",
    eos: str = "</s>",
    unk: str = "<unk>",
) -> PreTrainedTokenizerFast:
    """A byte-level BPE ``PreTrainedTokenizerFast`` trained on ``corpus`` that prepends ``bos`` to every text.

    The special tokens get ids 0 (pad), 1 (bos), 2 (eos) and 3 (unk).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token=unk))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[pad, bos, eos, unk],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(list(corpus), trainer)
    bpe.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, 1)])
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=bos, eos_token=eos, pad_token=pad, unk_token=unk)


def tiny_llama_dir(
    path: str | Path,
    corpus: Sequence[str] = DEFAULT_CORPUS,
    *,
    hidden_size: int = 32,
    max_positions: int = 256,
    chat_template: str | None = None,
    seed: int = 0,
) -> Path:
    """Save a random two-layer Llama and its :func:`bpe_tokenizer` (optionally with a chat template) to ``path``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = bpe_tokenizer(corpus)
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        initializer_range=0.5,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return Path(path)
