"""Vectors made small for vector stores: ``int8``, ``uint8``, ``binary`` and ``ubinary``, as
sentence-transformers' ``quantize_embeddings`` and infinity define them (pure numpy).

- ``uint8``: each component mapped linearly from its range ``[low, high]`` onto 0..255,
  rounded to the nearest level and clipped (sentence-transformers truncates and lets values
  outside the range wrap around); ``int8``: the same minus 128 (-128..127).
- ``ubinary``: one bit a component (1 where it is positive), packed eight to a byte
  (``numpy.packbits``, most significant bit first): ``ceil(d / 8)`` uint8; ``binary``: the same
  bytes minus 128, as int8.

The ranges: given ones (``(2, d)``: lows, then highs), else fixed ones, the same for every
vector so that a vector never depends on what it was sent with: ``±FIXED_RANGE_SIGMAS /
sqrt(d)`` (a unit vector's component has a spread of about ``1 / sqrt(d)``). A collection
can calibrate its own (:func:`calibration_ranges`, the per-dimension minimum and maximum, as
sentence-transformers does without calibration data) and pass them.
"""

from __future__ import annotations

import math

import numpy as np

PRECISIONS = ("int8", "uint8", "binary", "ubinary")
#: The fixed ranges' half-width, in spreads of a unit vector's component.
FIXED_RANGE_SIGMAS = 4.0


def fixed_ranges(dimensions: int) -> np.ndarray:
    """``(2, d)`` lows and highs: ``∓FIXED_RANGE_SIGMAS / sqrt(d)`` for every component."""
    half = FIXED_RANGE_SIGMAS / math.sqrt(dimensions)
    return np.array([[-half] * dimensions, [half] * dimensions], dtype=np.float32)


def calibration_ranges(vectors: np.ndarray) -> np.ndarray:
    """``(2, d)``: each component's minimum and maximum over ``vectors``."""
    vectors = np.asarray(vectors, dtype=np.float32)
    return np.stack([vectors.min(axis=0), vectors.max(axis=0)])


def _steps(ranges: np.ndarray) -> np.ndarray:
    low, high = ranges
    return np.where(high > low, (high - low) / 255.0, 1.0)


def dequantize(levels: np.ndarray, precision: str, ranges: np.ndarray | None = None) -> np.ndarray:
    """``int8``/``uint8`` vectors back to float32 (each level's value in its range): what a
    store scores them by (their raw levels carry each range's offset).

    Raises:
        ValueError: A precision other than ``int8`` or ``uint8``.
    """
    if precision not in ("int8", "uint8"):
        raise ValueError(f"only int8 and uint8 vectors are dequantized, not {precision!r}")
    d = levels.shape[-1]
    ranges = fixed_ranges(d) if ranges is None else np.asarray(ranges, dtype=np.float32)
    unsigned = levels.astype(np.float32) + (128 if precision == "int8" else 0)
    return (ranges[0] + unsigned * _steps(ranges)).astype(np.float32)


def quantize(vectors: np.ndarray, precision: str, ranges: np.ndarray | None = None) -> np.ndarray:
    """``vectors`` (``(n, d)`` float) at ``precision`` (one of :data:`PRECISIONS`).

    Raises:
        ValueError: Unknown precision, or ranges of the wrong shape.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    if precision in ("binary", "ubinary"):
        packed = np.packbits(vectors > 0, axis=-1)
        return (packed.astype(np.int16) - 128).astype(np.int8) if precision == "binary" else packed
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    d = vectors.shape[-1]
    ranges = fixed_ranges(d) if ranges is None else np.asarray(ranges, dtype=np.float32)
    if ranges.shape != (2, d):
        raise ValueError(f"ranges must have shape (2, {d}) (lows, highs), got {ranges.shape}")
    levels = np.clip(np.rint((vectors - ranges[0]) / _steps(ranges)), 0, 255)
    return (levels - 128).astype(np.int8) if precision == "int8" else levels.astype(np.uint8)
