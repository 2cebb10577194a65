"""Renderers for the token path (``--prompt-mode tokens|auto``): messages + tools → prompt ids, the ids
that extend a sampled turn (``bridge``), and the parse of a completion back into an assistant message.

``generic.TemplateRenderer`` works on any Hugging Face chat template (the one CI proves, on SmolLM2);
``pypi.PackageRenderer`` wraps the ``renderers`` package's typed renderers (optional extra
``steplake[render]``); ``resolve.resolve`` picks one. Importing this package loads no tokenizer.
"""

from .base import Parsed, ParsedCall, Renderer, load_class

__all__ = ["Renderer", "Parsed", "ParsedCall", "load_class"]
