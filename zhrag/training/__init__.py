"""Fine-tuning data for the answer and judge nodes: examples, file formats and label masking.

- ``examples``: ShareGPT-style records built with the graph's own prompts, from the reading-comprehension
  pairs over the knowledge base or from a question set plus retrieved passages, split by passage/question.
- ``formats``: ShareGPT / Alpaca files and LLaMA-Factory ``dataset_info.json`` entries (needs the optional
  ``datasets`` package, ``zhrag[train]``).
- ``masking``: token ids and labels that learn only the assistant replies (chat template or completion layout).
"""

from zhrag.rc_pairs import RCPair, load_rc_pairs
from zhrag.training.examples import (
    Example,
    ExampleSplits,
    LexicalRetriever,
    build_qa_examples,
    build_rc_examples,
    check_conversation,
    conversation,
    load_documents,
)
from zhrag.training.formats import (
    dataset_info_entry,
    export_examples,
    import_examples,
    write_dataset_info,
    write_splits,
)
from zhrag.training.masking import IGNORE_INDEX, TokenizedExample, tokenize_conversation, tokenize_examples

__all__ = [
    "IGNORE_INDEX",
    "Example",
    "ExampleSplits",
    "LexicalRetriever",
    "RCPair",
    "TokenizedExample",
    "build_qa_examples",
    "build_rc_examples",
    "check_conversation",
    "conversation",
    "dataset_info_entry",
    "export_examples",
    "import_examples",
    "load_documents",
    "load_rc_pairs",
    "tokenize_conversation",
    "tokenize_examples",
    "write_dataset_info",
    "write_splits",
]
