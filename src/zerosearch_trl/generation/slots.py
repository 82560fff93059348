"""A KV cache whose rows join, grow and leave in place: the store under
:class:`~zerosearch_trl.generation.continuous.ContinuousTransformersGenerator`.

transformers' ``DynamicCache`` appends a token by concatenation, so every decode step copies every row's whole
cache, and taking a finished row out (``index_select``) or letting new rows in (``cat``) copies it all again. With
many rows joining and leaving, as in a multi-turn rollout, those copies cost a good part of the model's time:
measured on the embedded model at 64 episodes x 2 searches on CPU, taking rows out was 20 of the rollout's 120 s;
with this store it is 0.7 s, the decode forward passes went from 48 s to 36 s, and the rollout took 80 s.

Here each layer's keys and values live in a buffer with spare rows and columns, and the model reads views of the
live window (rows ``[0, n)``, columns ``[start, end)``): a decode step writes one column; a finished row is
replaced by the last live row (one row copied); joining rows are written into the free rows, right-aligned with
the window (the columns left of them are masked out by the caller); the buffer grows by a quarter when it runs out, so
a token is copied a bounded number of times.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicLayer

GROWTH = 1.25
"""A full buffer is reallocated this much larger (rows or columns): growing costs O(1) copies per token, and the
spare stays a quarter of what is live."""

MIN_SPARE_COLUMNS = 64
"""Columns left free after the live window when a buffer is (re)allocated: decode steps before the next growth."""


class SlotLayer(DynamicLayer):
    """One layer's keys and values in a ``[rows, heads, columns, dim]`` buffer; ``keys`` and ``values`` are views
    of the live window (what the model and ``get_seq_length`` read).

    Example:
        >>> layer = SlotLayer(torch.ones(2, 1, 3, 4), torch.ones(2, 1, 3, 4))
        >>> keys, _ = layer.update(torch.zeros(2, 1, 1, 4), torch.zeros(2, 1, 1, 4))  # one decode step
        >>> keys.shape, layer.get_seq_length()
        (torch.Size([2, 1, 4, 4]), 4)
        >>> layer.keep_rows([(0, 1)], rows=1)  # row 0 finished: row 1 takes its place
        >>> layer.keys.shape
        torch.Size([1, 1, 4, 4])
    """

    is_croppable = False

    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        super().__init__()
        self.is_initialized, self.device = True, keys.device
        self.rows, self.start, self.end = keys.shape[0], 0, keys.shape[2]
        self._k, self._v = self._allocate(keys, keys.shape[0], keys.shape[2])
        self._k[:, :, : self.end], self._v[:, :, : self.end] = keys, values
        self._refresh()

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        """Write the new columns after the window (every live row's, in place) and return the grown views."""
        new = key_states.shape[2]
        if self.end + new > self._k.shape[2]:
            self._resize(self._k.shape[0], self.end - self.start + new, offset=0)
        self._k[: self.rows, :, self.end : self.end + new] = key_states
        self._v[: self.rows, :, self.end : self.end + new] = value_states
        self.end += new
        self._refresh()
        return self.keys, self.values

    def keep_rows(self, moves: list[tuple[int, int]], rows: int) -> None:
        """Copy row ``source`` into row ``target`` for each ``(target, source)`` in ``moves``, then keep the first
        ``rows`` rows (see :func:`swap_remove`)."""
        for target, source in moves:
            self._k[target, :, self.start : self.end] = self._k[source, :, self.start : self.end]
            self._v[target, :, self.start : self.end] = self._v[source, :, self.start : self.end]
        self.rows = rows
        self._refresh()

    def trim(self, columns: int) -> None:
        """Drop the window's first ``columns`` columns (padding in every live row)."""
        self.start += columns
        self._refresh()

    def add_rows(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Append rows ``[joining, heads, width, dim]`` right-aligned with the window, widening it to ``width`` if
        it is narrower (the caller's mask covers the columns each row does not fill)."""
        joining, width = keys.shape[0], keys.shape[2]
        rows_needed = self.rows + joining
        window = self.end - self.start
        if rows_needed > self._k.shape[0] or width > self.end:  # not enough rows, or no room on the left
            capacity = max(self._k.shape[0], rows_needed)
            capacity = capacity if rows_needed <= self._k.shape[0] else max(rows_needed, int(capacity * GROWTH))
            self._resize(capacity, max(width, window), offset=max(width - window, 0))
        self.start = min(self.start, self.end - width)
        self._k[self.rows : rows_needed, :, self.end - width : self.end] = keys
        self._v[self.rows : rows_needed, :, self.end - width : self.end] = values
        self.rows = rows_needed
        self._refresh()

    def _unsupported(self, *args, **kwargs) -> None:
        raise NotImplementedError(
            "A SlotLayer changes its rows with keep_rows/add_rows/trim (ContinuousTransformersGenerator); "
            "DynamicLayer's crop, reorder and batch operations would bypass its buffer."
        )

    crop = batch_repeat_interleave = batch_select_indices = reorder_cache = _unsupported

    def _allocate(self, like: torch.Tensor, rows: int, columns: int) -> tuple[torch.Tensor, torch.Tensor]:
        # Zeros, not empty memory: columns that a row does not fill are masked out, but must still be finite.
        shape = (rows, like.shape[1], max(int(columns * GROWTH), columns + MIN_SPARE_COLUMNS), like.shape[3])
        return like.new_zeros(shape), like.new_zeros(shape)

    def _resize(self, rows: int, columns: int, offset: int) -> None:
        """New buffers for ``rows`` rows and ``columns`` live columns (plus spare), the window copied to start at
        column ``offset``."""
        keys, values = self._allocate(self._k, rows, offset + columns)
        window = self.end - self.start
        keys[: self.rows, :, offset : offset + window] = self._k[: self.rows, :, self.start : self.end]
        values[: self.rows, :, offset : offset + window] = self._v[: self.rows, :, self.start : self.end]
        self._k, self._v, self.start, self.end = keys, values, offset, offset + window

    def _refresh(self) -> None:
        self.keys = self._k[: self.rows, :, self.start : self.end]
        self.values = self._v[: self.rows, :, self.start : self.end]


def slot_cache(layers: list[tuple[torch.Tensor, torch.Tensor]]) -> Cache:
    """A cache of :class:`SlotLayer` s holding ``layers`` (``(keys, values)`` per layer, copied in)."""
    return Cache(layers=[SlotLayer(keys, values) for keys, values in layers])


def swap_remove(alive: list[bool]) -> tuple[list[int], list[tuple[int, int]]]:
    """How to close the gaps that dead rows leave with as few row copies as possible: the live rows past the new
    end fill the dead rows before it. Returns the old index of each new row, and the ``(target, source)`` copies.

    Example:
        >>> swap_remove([True, False, True, True])
        ([0, 3, 2], [(1, 3)])
    """
    rows = sum(alive)
    holes = [i for i in range(rows) if not alive[i]]
    tail = [i for i in range(rows, len(alive)) if alive[i]]
    order = list(range(rows))
    for hole, source in zip(holes, tail):
        order[hole] = source
    return order, list(zip(holes, tail))
