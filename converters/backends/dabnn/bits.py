"""daBNN's bit layout for binary conv weights (what onnx2bnn's ``bitpack`` writes and the
runtime reads).

A weight (out, kh, kw, in) in NHWC order is flattened per filter to ``kh·kw·in`` values;
bit = (value > 0), 64 values per uint64 word, value ``j`` of a word in bit ``j``. If ``in``
is 64 the filters are packed back to back; otherwise each filter is zero-padded to a multiple
of 128 bits (``align_hwc_to_128``), matching the 128-bit-aligned columns of daBNN's
binary GEMM. Zero pad bits meet zero pad bits in those columns, so they add no mismatches.
"""

from __future__ import annotations

import numpy as np


def aligned_to_128(in_channels: int) -> bool:
    return in_channels != 64


def words_per_filter(kh: int, kw: int, in_channels: int) -> int:
    nbits = kh * kw * in_channels
    if aligned_to_128(in_channels):
        nbits = -(-nbits // 128) * 128
    return -(-nbits // 64)


def pack_weights(w_ohwi: np.ndarray) -> tuple[np.ndarray, bool]:
    """(out, kh, kw, in) values → (uint64 words, align_hwc_to_128)."""
    o, kh, kw, c = w_ohwi.shape
    bits = np.asarray(w_ohwi > 0, np.uint8).reshape(o, kh * kw * c)
    nwords = words_per_filter(kh, kw, c)
    padded = np.zeros((o, nwords * 64), np.uint8)
    padded[:, : bits.shape[1]] = bits
    words = np.packbits(padded, axis=1, bitorder="little").view("<u8")
    return words.reshape(-1).astype(np.uint64), aligned_to_128(c)


def unpack_words(words: np.ndarray, n_filters: int) -> np.ndarray:
    """uint64 words → (n_filters, bits per filter) array of 0/1, filters split evenly (as the
    runtime does: ``k = total words / out channels``)."""
    words = np.ascontiguousarray(np.asarray(words, np.uint64))
    if n_filters <= 0 or words.size % n_filters:
        raise ValueError(f"{words.size} words do not split into {n_filters} filters")
    raw = words.astype("<u8").view(np.uint8).reshape(n_filters, -1)
    return np.unpackbits(raw, axis=1, bitorder="little")
