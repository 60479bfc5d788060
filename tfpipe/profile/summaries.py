"""Reading back the TensorBoard scalars a run wrote (for notebooks and tests)."""

from __future__ import annotations

import os
from collections import defaultdict


def read_scalars(logdir: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """All scalars in the event files of one TensorBoard run directory.

    Args:
        logdir: e.g. `WORKDIR/logs/train`.

    Returns:
        `{tag: [(step, value), ...]}`, sorted by step.

    Example:

    ```python
    curve = tfpipe.profile.summaries.read_scalars("runs/x/logs/validation")["accuracy"]
    ```
    """
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    scalars = defaultdict(list)
    for path in sorted(tf.io.gfile.glob(os.path.join(os.fspath(logdir), "events.out.tfevents.*"))):
        # Event files are TFRecord files of Event protos; read them as such:
        # tf.compat.v1.train.summary_iterator logs a deprecation warning.
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                # tf.summary.scalar in TF2 stores the number as a tensor.
                number = float(tf.make_ndarray(value.tensor)) if value.HasField("tensor") else value.simple_value
                scalars[value.tag].append((int(event.step), number))
    return {tag: sorted(points) for tag, points in scalars.items()}
