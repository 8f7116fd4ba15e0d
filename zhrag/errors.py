"""User-facing errors.

Every problem a user can cause (bad input, missing file, unreachable service) is raised as a
:class:`ZhragError` whose message is one line naming what was wrong. The CLI prints that line and
exits non-zero; Python callers can catch the class.
"""


class ZhragError(Exception):
    """A problem caused by input or environment, with a one-line message fit for the user."""


class ConfigError(ZhragError):
    """Unknown variant, bad option value, or invalid runtime context."""


class RunContextError(ConfigError, ValueError):
    """A remote caller of a served graph sent a run context it may not (an operator field, a model, collection or
    value not allowed). A ``ValueError`` too, so that LangGraph servers pass its message on to the caller."""


class InputError(ConfigError, ValueError):
    """A graph's input is unusable (no question, an empty one, or one too long). A ``ValueError`` too, so that
    LangGraph servers pass its message on to the caller."""


class ModelLoadError(ZhragError):
    """A model, tokenizer or adapter could not be found or loaded."""


class ModelEndpointError(ModelLoadError):
    """An OpenAI-compatible model endpoint is unreachable, answers an error, or does not serve the model."""


class KnowledgeBaseError(ZhragError):
    """Missing or empty corpus source, malformed input line, or unusable collection."""


class QdrantUnavailableError(ZhragError):
    """The Qdrant server or embedded storage cannot be reached or opened."""


class MCPServerError(ZhragError):
    """The MCP knowledge server failed to start or a tool call failed."""


class DatasetError(ZhragError):
    """Missing or malformed evaluation data: question set, ids file or results file."""


class TrainingDataError(ZhragError):
    """Unusable fine-tuning data: malformed example, unknown export format, or a conversation that cannot be trained on."""
