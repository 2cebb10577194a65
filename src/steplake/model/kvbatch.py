"""The KV cache of a decoding batch: one row per sequence, left-padded to a common length.

``BatchCache`` keeps, for every layer, keys and values in a buffer ``[rows, kv_heads, capacity,
head_dim]`` that grows by doubling, so a decode step writes one column in place instead of copying the
whole cache (what ``DynamicCache`` does). ``valid`` ([rows, length], bool) marks the columns that hold a
row's own tokens; the others are left padding, masked out of attention. A row joins with the cache of
its prefill (``join``) and leaves with ``drop``; both rebuild the buffers (once per membership change,
never per step), and the padding columns no row needs any more are trimmed.

``step_kwargs`` gives the forward arguments of one batched step: the cache (a ``DynamicCache`` whose
layers write into the buffers), and, when some row is padded, a 4D boolean attention mask and per-row
``position_ids`` (each row's own token count, so its rotary positions are those it has alone). Without
padding the step runs exactly like a sequence decoded alone.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

MIN_CAPACITY = 64


def _capacity(length: int) -> int:
    cap = MIN_CAPACITY
    while cap < length:
        cap *= 2
    return cap


class _BufferLayer(DynamicLayer):  # type: ignore[no-untyped-call]
    """A cache layer writing into a preallocated buffer; ``keys``/``values`` are views of its used part."""

    def __init__(self, kbuf: torch.Tensor, vbuf: torch.Tensor, used: int) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.kbuf, self.vbuf, self.used = kbuf, vbuf, used
        self.is_initialized = True
        self.device, self.dtype = kbuf.device, kbuf.dtype
        self._views()

    def _views(self) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self.kbuf[:, :, : self.used], self.vbuf[:, :, : self.used]
        self.keys, self.values = keys, values
        return keys, values

    def _reserve(self, length: int) -> None:
        if length <= self.kbuf.shape[2]:
            return
        rows, heads, _, dim = self.kbuf.shape
        for name in ("kbuf", "vbuf"):
            old = getattr(self, name)
            new = old.new_empty(rows, heads, _capacity(length), dim)
            new[:, :, : self.used] = old[:, :, : self.used]
            setattr(self, name, new)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        n = key_states.shape[-2]
        self._reserve(self.used + n)
        self.kbuf[:, :, self.used : self.used + n] = key_states
        self.vbuf[:, :, self.used : self.used + n] = value_states
        self.used += n
        return self._views()

    def get_seq_length(self) -> int:
        return self.used

    def view(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(keys, values) in use: [rows, heads, length, dim]."""
        return self.kbuf[:, :, : self.used], self.vbuf[:, :, : self.used]


def _layer_tensors(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(keys, values) of every layer of a transformers cache, each [rows, heads, length, dim]."""
    return [(layer.keys, layer.values) for layer in cache.layers]


class BatchCache:
    """KV cache of the rows of a batch (see the module docstring). Row order is the caller's."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.layers: list[_BufferLayer] = []
        self.valid = torch.zeros(0, 0, dtype=torch.bool)
        self.cache: DynamicCache | None = None

    @property
    def rows(self) -> int:
        return int(self.valid.shape[0])

    @property
    def length(self) -> int:
        return int(self.valid.shape[1])

    @property
    def padded(self) -> bool:
        return not bool(self.valid.all())

    def lengths(self) -> list[int]:
        """Each row's own token count."""
        return [int(n) for n in self.valid.sum(dim=1).tolist()]

    def _rebuild(self, parts: list[list[tuple[torch.Tensor, torch.Tensor]]], valid: torch.Tensor) -> None:
        """New buffers from ``parts`` (per layer, per row group: keys/values right-aligned to ``valid``)."""
        rows, length = valid.shape
        layers = []
        for per_layer in parts:
            k0 = per_layer[0][0]
            heads, dim = k0.shape[1], k0.shape[3]
            kbuf = k0.new_zeros(rows, heads, _capacity(length + 1), dim)
            vbuf = k0.new_zeros(rows, heads, _capacity(length + 1), dim)
            start = 0
            for keys, values in per_layer:
                n, width = keys.shape[0], keys.shape[2]
                kbuf[start : start + n, :, length - width : length] = keys
                vbuf[start : start + n, :, length - width : length] = values
                start += n
            layers.append(_BufferLayer(kbuf, vbuf, length))
        self.layers, self.valid = layers, valid
        cache = DynamicCache()
        cache.layers = list(layers)
        cache.layer_class_to_replicate = None
        self.cache = cache

    def join(self, cache: Any, length: int) -> None:
        """Add a row (last) from the ``cache`` of its prefill, which holds ``length`` tokens."""
        new = _layer_tensors(cache)
        if not self.layers:
            self._rebuild([[(k[:, :, :length], v[:, :, :length])] for k, v in new],
                          torch.ones(1, length, dtype=torch.bool))
            return
        total = max(self.length, length)
        valid = torch.zeros(self.rows + 1, total, dtype=torch.bool)
        valid[: self.rows, total - self.length :] = self.valid
        valid[self.rows, total - length :] = True
        parts = [[layer.view(), (k[:, :, :length], v[:, :, :length])]
                 for layer, (k, v) in zip(self.layers, new, strict=True)]
        self._rebuild(parts, valid)

    def drop(self, rows: list[int]) -> None:
        """Remove the rows at these indices; trim the padding columns no remaining row needs."""
        keep = [i for i in range(self.rows) if i not in set(rows)]
        if not keep:
            self.reset()
            return
        index = torch.tensor(keep, dtype=torch.long)
        valid = self.valid[index]
        first = int(valid.any(dim=0).to(torch.int8).argmax())
        valid = valid[:, first:]
        parts = [[(k[index][:, :, first:], v[index][:, :, first:]) for k, v in [layer.view()]]
                 for layer in self.layers]
        self._rebuild(parts, valid)

    def step_kwargs(self, width: int = 1) -> dict[str, Any]:
        """Mask and positions for a forward of ``width`` new tokens per row (``width > 1`` only without
        padding; none needed then) over ``self.cache``; call ``advance(width)`` after it."""
        kwargs: dict[str, Any] = {}
        if self.padded:
            if width != 1:
                raise ValueError("a padded batch takes one token per row")
            mask = torch.cat([self.valid, torch.ones(self.rows, 1, dtype=torch.bool)], dim=1)
            kwargs["attention_mask"] = mask[:, None, None, :]
            kwargs["position_ids"] = self.valid.sum(dim=1, keepdim=True)
        return kwargs

    def advance(self, width: int = 1) -> None:
        self.valid = torch.cat([self.valid, torch.ones(self.rows, width, dtype=torch.bool)], dim=1)


__all__ = ["BatchCache"]
