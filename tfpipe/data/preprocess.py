"""Per-example preprocessing steps named in a config's `data.map.steps`.

Each step is a factory: called with the step's config arguments it returns a
pure function `(features, label) -> (features, label)` that works on one
example inside `tf.data.Dataset.map`. `compose(steps)` chains them in config
order.

Example:

```yaml
data:
  map:
    steps:
      - {op: rescale, scale: 0.0625}
      - {op: one_hot, num_classes: 10}
```
"""

from __future__ import annotations

import inspect

import tensorflow as tf


def rescale(scale: float, offset: float = 0.0):
    """Casts features to float32 and maps x to x * scale + offset."""

    def fn(x, y):
        return tf.cast(x, tf.float32) * scale + offset, y

    return fn


def one_hot(num_classes: int):
    """Turns an integer class label into a one-hot float vector."""

    def fn(x, y):
        return x, tf.one_hot(tf.cast(y, tf.int32), num_classes)

    return fn


def reshape(shape: list):
    """Reshapes the features, e.g. flat 64 pixels to [8, 8, 1] for a CNN."""

    def fn(x, y):
        return tf.reshape(x, shape), y

    return fn


# Dispatch by plain dict: the op names a config may use.
STEPS = {
    "rescale": rescale,
    "one_hot": one_hot,
    "reshape": reshape,
}

# Ops whose output differs between epochs (augmentation). Everything before the
# first of them is deterministic and can run once, before the cache.
RANDOM_OPS: frozenset = frozenset()


def split_at_first_random(steps) -> tuple[tuple, tuple]:
    """Splits steps into a deterministic prefix and the rest (from the first random op)."""
    steps = tuple(steps)
    for i, step in enumerate(steps):
        if step["op"] in RANDOM_OPS:
            return steps[:i], steps[i:]
    return steps, ()


def check_steps(steps, where: str = "config") -> None:
    """Raises ValueError naming the step when an op or its arguments are wrong."""
    for i, step in enumerate(steps):
        key = f"data.map.steps[{i}]"
        if not isinstance(step, dict) or "op" not in step:
            raise ValueError(f"{where}: {key}: expected a mapping with an 'op' key, got {step!r}")
        op = step["op"]
        if op not in STEPS:
            raise ValueError(f"{where}: {key}.op: expected one of {', '.join(sorted(STEPS))}, got {op!r}")
        args = {k: v for k, v in step.items() if k != "op"}
        try:
            inspect.signature(STEPS[op]).bind(**args)
        except TypeError as e:
            params = ", ".join(inspect.signature(STEPS[op]).parameters)
            raise ValueError(f"{where}: {key} ({op}): {e}; its arguments are: {params}") from None


def compose(steps):
    """One map function applying every configured step in order."""
    fns = [STEPS[s["op"]](**{k: v for k, v in s.items() if k != "op"}) for s in steps]

    def fn(x, y):
        for f in fns:
            x, y = f(x, y)
        return x, y

    return fn
