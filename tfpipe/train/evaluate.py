"""Metrics and predictions of a finished run, on any split or on other files.

A finished workdir holds `config.yaml` and `model.keras`; the config's input
pipeline (evaluation form: deterministic, one ordered pass, the training
split's `normalize` statistics) feeds the model, so the numbers are the ones
training reported:

```python
from tfpipe.train import evaluate
evaluate.metrics("runs/mlp", split="test")                 # {'loss': ..., 'accuracy': ..., 'examples': 359}
evaluate.metrics("runs/clicks", files="data/new/*.csv")    # other files in the training format
evaluate.predict("runs/mlp", "preds.csv", split="test")    # index, label, class_id, p0..p9 per row
```

Files given instead of a split replace the config's test files (`csv`,
`tfrecord`, `image_folder` roots) or, for `npz`, the one array file (read
whole). A CSV without the label column predicts all the same (no `label`
column in the output; its metrics need labels).
"""

from __future__ import annotations

import csv as csv_lib
import dataclasses
import json
from pathlib import Path

from tfpipe import config as config_lib

_FILE_SOURCES = ("csv", "tfrecord", "image_folder", "npz")


class RunError(ValueError):
    """A workdir, split or file that cannot be evaluated (one line for the user)."""


def load_run(workdir):
    """(cfg, model) of a finished run; raises RunError when it is not one."""
    workdir = Path(workdir)
    for need in ("config.yaml", "model.keras"):
        if not (workdir / need).exists():
            raise RunError(f"--workdir {workdir}: expected a finished run holding {need}. Received: no such file")
    import keras  # pylint: disable=import-outside-toplevel

    # Registers tfpipe's Keras classes (FusedAdam) before loading.
    import tfpipe.train.optimizers  # noqa: F401  # pylint: disable=import-outside-toplevel,unused-import

    cfg = config_lib.load(workdir / "config.yaml")
    return cfg, keras.models.load_model(workdir / "model.keras", compile=False)


def _data(cfg, split: str | None, files: str | None):
    """(data config, split) reading `files` instead of the config's, or the named split."""
    data = cfg.data
    if files is None:
        if split not in ("train", "validation", "test"):
            raise RunError(f"--split: expected train, validation or test. Received: {split!r}")
        return data, split, True
    if data.source not in _FILE_SOURCES:
        raise RunError(
            f"--file: the run's data.source is {data.source!r}, which reads no files; "
            f"--file works for {', '.join(_FILE_SOURCES)} (use --split)"
        )
    if data.source == "npz":  # the one array file, all of it
        data = dataclasses.replace(data, files=dataclasses.replace(data.files, train=files),
                                   split=dataclasses.replace(data.split, validation=0.0, test=0.0))
        return data, "train", True
    labelled = True
    if data.source == "csv" and data.csv.label_column:
        from tfpipe.data import sources  # pylint: disable=import-outside-toplevel

        try:
            first = sources.list_files(files, data.read, "--file")[0]
        except FileNotFoundError as e:
            raise RunError(str(e)) from None
        if data.csv.header and data.csv.label_column not in sources.read_header(first, data.csv.delimiter):
            labelled = False  # predict from the features alone
            data = dataclasses.replace(data, csv=dataclasses.replace(data.csv, label_column=""))
    return dataclasses.replace(data, files=dataclasses.replace(data.files, test=files)), "test", labelled


def _dataset(cfg, split, files, batch_size):
    from tfpipe.data import pipeline, sources  # pylint: disable=import-outside-toplevel

    data, split, labelled = _data(cfg, split, files)
    try:
        # normalize's statistics come from the run's own training split, whatever is evaluated.
        data = dataclasses.replace(data, map=dataclasses.replace(data.map, steps=pipeline.resolve_stats(cfg.data)))
        source = sources.load(data, split)
        if source.num_examples == 0:
            raise RunError(f"--split {split}: the run's data has no {split} split" if files is None
                           else f"--file {files}: holds no examples")
        ds = pipeline.build(data, split, batch_size or cfg.train.batch_size, training=False, resolve=False)
    except (FileNotFoundError, config_lib.ConfigError) as e:
        raise RunError(str(e)) from None
    return ds, labelled, sources.load(cfg.data, "train").num_classes


def metrics(workdir, split: str | None = "test", files: str | None = None, batch_size: int = 0) -> dict:
    """The run's loss and `train.metrics` on a split or on files.

    Args:
        workdir: a finished run.
        split: train, validation or test (ignored when `files` is given).
        files: comma-separated globs in the run's data format.
        batch_size: 0 = the run's `train.batch_size`.

    Returns:
        `{'loss': ..., <metric>: ..., 'examples': N, 'split': ...}`.

    Raises:
        RunError: no finished run, no such split, files that match nothing,
            files without labels.
    """
    import keras  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from tfpipe.train import custom, recipes  # pylint: disable=import-outside-toplevel
    from tfpipe.train.metrics import Metrics  # pylint: disable=import-outside-toplevel

    cfg, model = load_run(workdir)
    ds, labelled, num_classes = _dataset(cfg, split, files, batch_size)
    if not labelled:
        raise RunError(f"--file {files}: no {cfg.data.csv.label_column!r} column, so no metrics (predict works)")
    cfg = custom.resolve_loss(cfg, ds.element_spec[1])
    results = Metrics(cfg.model.loss, "eval", recipes.metric_names(cfg.train, cfg.model.loss), num_classes)
    loss_fn = keras.losses.get(cfg.model.loss)
    count = tf.Variable(0, dtype=tf.int64)

    @tf.function
    def run(dataset):
        for features, labels in dataset:
            predictions = model(features, training=False)
            results.update(loss_fn(labels, predictions), labels, predictions)
            count.assign_add(tf.shape(predictions, out_type=tf.int64)[0])

    run(ds)
    return {**results.result(), "examples": int(count.numpy()), "split": split if files is None else files}


def predict(workdir, output, split: str | None = "test", files: str | None = None, batch_size: int = 0,
            fmt: str | None = None) -> dict:  # fmt: skip
    """Writes the run's predictions on a split or on files to CSV or JSON.

    One row per example, in the pipeline's evaluation order (file order,
    unshuffled): `index`, `label` (when the data has labels), `class_id`
    and one probability per class `p0`, `p1`, ... (a sigmoid output: `p1`
    only); a regression model: `prediction`. JSON is `{"predictions": [{...}, ...]}`
    with the probabilities as a list.

    Args:
        workdir, split, files, batch_size: as `metrics`.
        output: the file to write.
        fmt: csv or json; None takes it from the output's suffix.

    Returns:
        `{'output': path, 'examples': N}`.
    """
    import numpy as np  # pylint: disable=import-outside-toplevel

    from tfpipe.train import recipes  # pylint: disable=import-outside-toplevel
    from tfpipe.train.metrics import class_ids, predicted_ids  # pylint: disable=import-outside-toplevel

    output = Path(output)
    fmt = fmt or output.suffix.lstrip(".").lower()
    if fmt not in ("csv", "json"):
        raise RunError(f"--output {output}: expected a .csv or .json file (or --format csv|json). Received: {fmt!r}")
    cfg, model = load_run(workdir)
    ds, labelled, _ = _dataset(cfg, split, files, batch_size)
    classify = recipes.is_classification(cfg.model.loss)
    rows = []
    for features, labels in ds:
        predictions = model(features, training=False)
        p = np.asarray(predictions, np.float64)
        ids = predicted_ids(predictions).numpy() if classify else None
        truth = None
        if labelled:
            truth = class_ids(labels, predictions).numpy() if classify else np.asarray(labels).reshape(len(p), -1)[:, 0]
        for i in range(len(p)):
            row = {"index": len(rows)}
            if truth is not None:
                row["label"] = truth[i].item()
            if classify:
                row["class_id"] = int(ids[i])
                row["probabilities"] = [float(v) for v in p[i]]
            else:
                row["prediction"] = float(p[i].reshape(-1)[0])
            rows.append(row)
    output.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "json":
        output.write_text(json.dumps({"predictions": rows}), encoding="utf-8")
    else:
        with open(output, "w", newline="", encoding="utf-8") as f:
            writer = csv_lib.writer(f)
            width = len(rows[0].get("probabilities", [])) if rows else 0
            prob_names = ["p1"] if width == 1 else [f"p{c}" for c in range(width)]
            head = ["index"] + (["label"] if labelled else [])
            head += ["class_id", *prob_names] if classify else ["prediction"]
            writer.writerow(head)
            for row in rows:
                values = [row["index"]] + ([row["label"]] if labelled else [])
                if classify:
                    values += [row["class_id"], *(f"{v:.6g}" for v in row["probabilities"])]
                else:
                    values.append(row["prediction"])
                writer.writerow(values)
    return {"output": str(output), "examples": len(rows)}
