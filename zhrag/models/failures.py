"""Turning library exceptions into the one-line reasons of :class:`zhrag.errors.ModelLoadError`."""

from __future__ import annotations


def first_line(error: BaseException) -> str:
    """The first non-empty line of ``error``'s message, or its class name when the message is empty."""
    for line in str(error).splitlines():
        if line.strip():
            return line.strip()
    return type(error).__name__
