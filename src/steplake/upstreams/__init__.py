"""Upstream inference servers: kinds, HTTP client, health and routing, the embedded model process and the
tokenizer fallback. See ``base`` for the ``--upstream`` spec and kind detection."""

from .base import KINDS, RELOADABLE, Upstream, UpstreamFailure, parse_upstream
from .local import LocalModelProcess
from .openai_compat import UpstreamClient
from .routing import UpstreamPool
from .tokenizer import FallbackTokenizer

__all__ = ["KINDS", "RELOADABLE", "Upstream", "UpstreamFailure", "parse_upstream", "LocalModelProcess",
           "UpstreamClient", "UpstreamPool", "FallbackTokenizer"]
