"""Data sources: each turns a `DataConfig` and a split name into single examples.

A source returns a `Source`: a `tf.data.Dataset` of `(features, label)`
pairs, one example per element, plus what the rest of tfpipe must know
before it builds a model (example count, number of classes).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import tensorflow as tf

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(frozen=True)
class Source:
    dataset: tf.data.Dataset
    num_examples: int
    num_classes: int


def split_indices(n: int, validation: float, test: float, seed: int) -> dict[str, np.ndarray]:
    """A fixed, seeded permutation of range(n) cut into the three splits."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test))
    n_val = int(round(n * validation))
    return {
        "test": order[:n_test],
        "validation": order[n_test : n_test + n_val],
        "train": order[n_test + n_val :],
    }


@functools.lru_cache(maxsize=1)
def _digits_arrays():
    # scikit-learn ships these 1,797 8x8 images inside its wheel: no download.
    from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel

    bunch = load_digits()
    return bunch.data.astype(np.float32), bunch.target.astype(np.int64)


def digits(data_cfg, split: str) -> Source:
    """The embedded default: handwritten digits, 64 pixel values in 0..16."""
    x, y = _digits_arrays()
    s = data_cfg.split
    idx = split_indices(len(x), s.validation, s.test, s.seed)[split]
    ds = tf.data.Dataset.from_tensor_slices((x[idx], y[idx]))
    return Source(ds, num_examples=len(idx), num_classes=10)


# Dispatch by plain dict: the names `data.source` may take.
SOURCES = {
    "digits": digits,
}


def load(data_cfg, split: str) -> Source:
    """The `split` of the source named by `data_cfg.source`."""
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {', '.join(SPLITS)}, got {split!r}")
    if data_cfg.source not in SOURCES:
        raise ValueError(
            f"data.source: expected one of {', '.join(sorted(SOURCES))}, got {data_cfg.source!r}"
        )
    return SOURCES[data_cfg.source](data_cfg, split)
