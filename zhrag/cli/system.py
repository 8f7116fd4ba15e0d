"""Models and the installation: ``zhrag serve-model`` and ``doctor``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from zhrag import settings
from zhrag.cli.options import DeviceOpt
from zhrag.errors import ConfigError


def serve_model(
    model: Annotated[str, typer.Option(help="GGUF model to serve: packaged alias or .gguf file.")] = settings.DEFAULT_LLM,
    host: Annotated[str, typer.Option(help="Interface to listen on (a non-loopback one needs an API key).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port.")] = 8080,
    api_key_env: Annotated[
        str, typer.Option(help="Environment variable holding the API key clients must send (unset: no key, loopback only).")
    ] = "ZHRAG_MODEL_API_KEY",
    device: DeviceOpt = None,
) -> None:
    """Serve a GGUF model over llama.cpp's OpenAI-compatible HTTP API (for --model-base-url elsewhere)."""
    import os
    import threading

    from zhrag.models.llamacpp import LlamaCppRuntime, LlamaCppSettings
    from zhrag.models.packaged import packaged_gguf, packaged_model
    from zhrag.models.sources import resolve_model_source

    key = os.environ.get(api_key_env) or None
    if key is None and not settings.is_loopback(host):
        raise ConfigError(f"serving on {host} needs an API key: set {api_key_env}")
    source = resolve_model_source(model)
    if source.kind not in ("packaged", "gguf"):
        raise ConfigError(f"serve-model serves GGUF models (packaged aliases or .gguf files), not {model!r}")
    path = packaged_gguf(model)[0] if packaged_model(model) else Path(source.location)
    runtime = LlamaCppRuntime(path, LlamaCppSettings.from_env(device), host=host, port=port, api_key=key or "", alias=model)
    typer.echo(f"serving {model} at {runtime.address}/v1 (model name {model!r}{', API key required' if key else ''}); Ctrl-C stops")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        typer.echo("stopped", err=True)


def doctor(
    lock: Annotated[
        Path | None, typer.Option(help="Lock file to compare the installed versions with (default: the clone's requirements.lock).")
    ] = None,
) -> None:
    """Check the installation: transformers / peft pair, installed versions against the lock file, the default model."""
    from zhrag.compat import LOCK_FILE, lock_mismatches, lora_stack_problem

    problems = []
    if problem := lora_stack_problem():
        problems.append(problem)
    path = lock or (LOCK_FILE if LOCK_FILE.is_file() else None)
    if path is not None:
        mismatches = lock_mismatches(path)
        problems += [f"{line} (lock file {path})" for line in mismatches]
        if not mismatches:
            typer.echo(f"installed versions match {path}")
    for problem in problems:
        typer.echo(f"problem: {problem}", err=True)
    if problems:
        raise ConfigError(f"{len(problems)} problem(s) with the installation; reinstall: pip install -c requirements.lock -e .")
    typer.echo("transformers and peft are a compatible pair")
