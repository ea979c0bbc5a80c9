"""Operations on a transformers `DynamicCache` along its batch dimension.

A batch of sequences decoded together shares one cache whose rows are left-padded to a common
length (the attention mask says which columns are padding). This module joins two such caches
(`merge`), keeps a subset of rows (`select`), drops leading columns that are padding in every
row (`trim_left`), and saves / restores the state one decode step changes (`Checkpoint`), so a
step that fails can be undone.

Layers it handles: full-attention key/value layers (`DynamicLayer`, shape [batch, heads, seq,
dim]) and linear-attention layers (conv and recurrent states, [batch, ...], no sequence axis;
Qwen3.5's gated delta net), including layers that hold both. Anything else (sliding windows,
quantized or static caches) raises `UnsupportedCache`: such models are not batched.

Knows nothing of models, requests, the UI or the database.
"""

from __future__ import annotations

from dataclasses import dataclass


class UnsupportedCache(TypeError):
    pass


def _kinds(layer) -> tuple[bool, bool]:
    """(has key/value tensors, has linear-attention states) for one cache layer."""
    from transformers.cache_utils import (
        DynamicLayer,
        DynamicSlidingWindowLayer,
        LinearAttentionCacheLayerMixin,
    )

    linear = isinstance(layer, LinearAttentionCacheLayerMixin)
    if isinstance(layer, DynamicSlidingWindowLayer):
        raise UnsupportedCache("sliding-window cache layers are not batched")
    keyed = isinstance(layer, DynamicLayer)
    if not (keyed or linear):
        raise UnsupportedCache(f"{type(layer).__name__} cache layers are not batched")
    return keyed, linear


def _state_slots(layer):
    """(dict, index) pairs of the initialised linear-attention states of one layer."""
    for index in range(layer.number_of_states):
        if layer.is_conv_states_initialized[index]:
            yield layer.conv_states, index
        if layer.is_recurrent_states_initialized[index]:
            yield layer.recurrent_states, index


def check(cache) -> None:
    """Raise UnsupportedCache unless every layer of `cache` can be batched here."""
    for layer in cache.layers:
        _kinds(layer)


def _left_pad(tensor, columns: int):
    import torch

    if columns == 0:
        return tensor
    shape = list(tensor.shape)
    shape[-2] = columns
    return torch.cat([tensor.new_zeros(shape), tensor], dim=-2)


def merge(first, first_length: int, second, second_length: int) -> int:
    """Append the rows of `second` to `first` (in place) and return the common length.

    The shorter of the two is left-padded with zero keys/values; the caller pads its attention
    masks by the same amounts (the difference of the lengths, on the shorter side).
    """
    import torch

    length = max(first_length, second_length)
    for mine, theirs in zip(first.layers, second.layers, strict=True):
        keyed, linear = _kinds(mine)
        if keyed and mine.is_initialized:
            mine.keys = torch.cat([_left_pad(mine.keys, length - first_length),
                                   _left_pad(theirs.keys, length - second_length)], dim=0)
            mine.values = torch.cat([_left_pad(mine.values, length - first_length),
                                     _left_pad(theirs.values, length - second_length)], dim=0)
        if linear:
            for (states, index), (other, _) in zip(_state_slots(mine), _state_slots(theirs),
                                                   strict=True):
                states[index] = torch.cat([states[index], other[index]], dim=0)
    return length


def select(cache, rows: list[int]) -> None:
    """Keep only `rows` (in that order), in place."""
    import torch

    for layer in cache.layers:
        keyed, linear = _kinds(layer)
        if keyed and layer.is_initialized:
            index = torch.tensor(rows, device=layer.keys.device)
            layer.keys = layer.keys.index_select(0, index)
            layer.values = layer.values.index_select(0, index)
        if linear:
            for states, slot in _state_slots(layer):
                index = torch.tensor(rows, device=states[slot].device)
                states[slot] = states[slot].index_select(0, index)


def trim_left(cache, columns: int) -> None:
    """Drop the first `columns` positions of every key/value layer, in place."""
    if columns <= 0:
        return
    for layer in cache.layers:
        keyed, _ = _kinds(layer)
        if keyed and layer.is_initialized:
            layer.keys = layer.keys[..., columns:, :]
            layer.values = layer.values[..., columns:, :]


@dataclass
class Checkpoint:
    """What one decode step will change, saved before it: the key/value length, and the
    linear-attention states, which the step overwrites in place."""

    length: int
    states: list

    @classmethod
    def take(cls, cache, length: int) -> Checkpoint:
        saved = []
        for layer in cache.layers:
            _, linear = _kinds(layer)
            if linear:
                for states, slot in _state_slots(layer):
                    # The step writes into the tensor it finds: give it a copy, keep the original.
                    saved.append((states, slot, states[slot]))
                    states[slot] = states[slot].clone()
        return cls(length, saved)

    def restore(self, cache) -> None:
        for states, slot, original in self.states:
            states[slot] = original
        for layer in cache.layers:
            keyed, _ = _kinds(layer)
            if keyed and layer.is_initialized:
                layer.keys = layer.keys[..., :self.length, :]
                layer.values = layer.values[..., :self.length, :]
