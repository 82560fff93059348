"""The continuous generator's KV store: rows join, grow and leave in place, and every live row still reads exactly
its own keys and values, right-aligned in the window (checked against plain per-row lists over random joins,
decode steps, departures and trims, through every buffer growth)."""

from __future__ import annotations

import random

import torch

from zerosearch_trl.generation.slots import SlotLayer, slot_cache, swap_remove


def test_rows_join_grow_and_leave_and_each_keeps_its_own_columns():
    rng = random.Random(0)
    heads, dim = 2, 3

    def tokens(rows, width):
        return torch.randn(rows, heads, width, dim)

    first = tokens(2, 5)
    layer = SlotLayer(first, -first)
    rows = [first[i] for i in range(2)]  # each live row's own columns, [heads, length, dim]
    growths, buffers = 0, layer._k.data_ptr()
    for _ in range(300):
        action = rng.choice(["decode", "decode", "decode", "join", "leave"])
        if action == "decode" and rows:
            new = tokens(len(rows), 1)
            keys, values = layer.update(new, -new)
            assert keys.shape[2] == layer.get_seq_length() and torch.equal(values, -keys)
            rows = [torch.cat([row, new[i]], 1) for i, row in enumerate(rows)]
        elif action == "join":
            joining = tokens(rng.randint(1, 3), rng.randint(1, 40))  # narrower or wider than the window
            layer.add_rows(joining, -joining)
            rows += [joining[i] for i in range(joining.shape[0])]
        elif action == "leave" and len(rows) > 1:
            alive = [rng.random() > 0.3 for _ in rows]
            alive[rng.randrange(len(rows))] = True
            order, moves = swap_remove(alive)
            assert len(moves) <= alive.count(False)  # one row copied per gap at most
            layer.keep_rows(moves, len(order))
            rows = [rows[i] for i in order]
        unused = layer.get_seq_length() - max(row.shape[1] for row in rows)
        if unused:
            layer.trim(unused)  # columns that are padding in every row
        if layer._k.data_ptr() != buffers:
            growths, buffers = growths + 1, layer._k.data_ptr()
        assert layer.keys.shape[:3] == (len(rows), heads, max(row.shape[1] for row in rows))
        for index, row in enumerate(rows):
            assert torch.equal(layer.keys[index, :, -row.shape[1] :], row)
            assert torch.equal(layer.values[index, :, -row.shape[1] :], -row)
    # The buffer grew now and then, not at every step (a token is copied a bounded number of times).
    assert 1 <= growths < 40


def test_the_model_reads_and_extends_a_slot_cache_like_a_dynamic_cache(tiny_model, tokenizer):
    """One decode step on a slot cache gives the logits and keys that transformers' own DynamicCache gives."""
    from transformers.cache_utils import DynamicCache

    model = tiny_model.eval()
    ids = torch.tensor([tokenizer("The capital of France is", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        prefill = model(input_ids=ids, use_cache=True)
        layers = [(layer.keys, layer.values) for layer in prefill.cache.layers]
        step = {"input_ids": prefill.logits[:, -1:].argmax(-1), "use_cache": True}
        expected = model(**step, cache=DynamicCache(ddp_cache_data=layers))
        got = model(**step, cache=(cache := slot_cache(layers)))
    torch.testing.assert_close(got.logits, expected.logits)
    assert cache.get_seq_length() == ids.shape[1] + 1
    torch.testing.assert_close(cache.layers[0].keys, expected.cache.layers[0].keys)
