"""SavedModel export for serving, with the config's deterministic preprocessing inside.

    export/<name>/<version>/saved_model.pb, variables/    (TensorFlow Serving's layout)

The `serving_default` signature takes what the data source yields before any
step runs — a CSV row's columns, a record's encoded image bytes, an array
of pixels — and returns `{"predictions": ...}`, the model's output. The
steps of `data.map.steps` run in the graph exactly as evaluation runs them
(`training=False`: centre crop, no flip; `normalize` with the training
split's statistics frozen in as constants), so serving cannot drift from
training. Label steps (`one_hot`, `binary_label`) have no input to act on
and are left out; `drop_missing` is a filter, and a server must answer every
row, so it is left out too (a served row with a missing value gets a
prediction, not a dropped answer).

Batch-capable steps run once on the whole request batch; the others
(`decode_*`, `reshape`, `random_crop`) run per row inside `tf.map_fn`.

Example:

```python
from tfpipe.serve import export
path = export.export_run("runs/mlp")          # runs/mlp/export/mlp/1
```
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tfpipe import config as config_lib
from tfpipe.data import pipeline, preprocess, sources
from tfpipe.distribute import sharding

# Steps a server must not run: they act on labels or drop rows.
SKIPPED_OPS = frozenset({"one_hot", "binary_label", "drop_missing"})
OUTPUT_KEY = "predictions"
STEPS_FILE = "tfpipe_preprocessing.json"


def serving_steps(data_cfg) -> tuple:
    """The config's steps as serving runs them: statistics resolved, label and filter steps left out."""
    return tuple(s for s in pipeline.resolve_stats(data_cfg) if s["op"] not in SKIPPED_OPS)


def raw_spec(data_cfg) -> dict:
    """Name -> `tf.TensorSpec` (batch dimension None) of the raw features the source yields.

    A single-tensor source gets one input: named after its TFRecord feature,
    `image` for image folders, `inputs` otherwise.
    """
    source = sources.load(data_cfg, "train")
    spec = (source.examples if source.reader is None else _parsed_records(source)).element_spec[0]
    if isinstance(spec, dict):
        return {k: tf.TensorSpec([None, *v.shape], v.dtype, name=k) for k, v in spec.items()}
    name = {"image_folder": "image"}.get(data_cfg.source, "inputs")
    if data_cfg.source == "tfrecord":
        keys = [k for k in _tfrecord_keys(data_cfg) if k != data_cfg.tfrecord.label_key]
        name = keys[0] if len(keys) == 1 else name
    return {name: tf.TensorSpec([None, *spec.shape], spec.dtype, name=name)}


def _parsed_records(source):
    # Only the element spec is read: nothing is pulled through the reader.
    files = tf.data.Dataset.from_tensor_slices(list(source.files)[:1])
    return files.flat_map(source.reader).map(source.parse)


def _tfrecord_keys(data_cfg):
    from tfpipe.data import feature_spec  # pylint: disable=import-outside-toplevel

    return list(feature_spec.load(data_cfg.tfrecord).features)


def _specs_of(structure):
    return tf.nest.map_structure(lambda t: tf.TensorSpec(t.shape, t.dtype), structure)


def preprocessor(steps, raw: dict):
    """A function batch-of-raw-features -> model features, running `steps` as evaluation does.

    Consecutive batch-capable steps run once on the batch; runs of the
    others go through one `tf.map_fn` per run, row by row.
    """
    groups: list[tuple[bool, list]] = []
    for step in steps:
        batched = step["op"] in preprocess.BATCHABLE
        if groups and groups[-1][0] == batched:
            groups[-1][1].append(step)
        else:
            groups.append((batched, [step]))
    single = len(raw) == 1
    # Built once, outside the serving function: lookup tables are created
    # eagerly and tracked by the SavedModel through `run.resources`.
    composed = [(batched, preprocess.compose(group, training=False)) for batched, group in groups]

    def run(features):
        x = next(iter(features.values())) if single else dict(features)
        for batched, fn in composed:
            if batched:
                x, _ = fn(x, None)
                continue
            row_spec = tf.nest.map_structure(lambda t: tf.TensorSpec(t.shape[1:], t.dtype), x)
            out_spec = _specs_of(tf.function(lambda r, f=fn: f(r, None)[0]).get_concrete_function(row_spec)
                                 .structured_outputs)
            x = tf.map_fn(lambda r, f=fn: f(r, None)[0], x, fn_output_signature=out_spec)
        return x

    run.resources = tuple(r for _, fn in composed for r in fn.resources)
    return run


def raw_examples(data_cfg, split: str = "test", limit: int = 256) -> dict:
    """Up to `limit` raw examples of a split as name -> numpy array (what a client would send)."""
    raw = raw_spec(data_cfg)
    source = sources.load(data_cfg, split)
    ds = source.examples if source.reader is None else source.dataset
    feats = [f for f, _ in ds.take(limit).as_numpy_iterator()]
    if len(raw) == 1:
        (name, _), = raw.items()
        return {name: np.array(feats, dtype=object if isinstance(feats[0], bytes) else None)}
    return {k: np.array([f[k] for f in feats], dtype=object if isinstance(feats[0][k], bytes) else None) for k in raw}


def next_version(base: Path) -> int:
    """One more than the highest numeric version under `base` (TF Serving serves the highest)."""
    versions = [int(p.name) for p in base.iterdir() if p.name.isdigit()] if base.is_dir() else []
    return max(versions, default=0) + 1


def export(model: keras.Model, cfg: config_lib.Config, base_dir, version: int | None = None) -> Path:
    """Writes `base_dir/<version>/` with the `serving_default` signature.

    Args:
        model: the trained Keras model (called with `training=False`).
        cfg: the run's config: its `data` section gives the raw inputs and steps.
        base_dir: `export/<name>`; the version directory goes under it.
        version: default one above the highest existing version.

    Returns:
        The version directory.
    """
    base = Path(base_dir)
    version = next_version(base) if version is None else version
    if sharding.any_sharded(model):
        # runtime.variable_partitioner: the shards are gathered into whole,
        # local variables first, so a server loads a plain SavedModel that
        # needs no ps task (ShardedVariable's docstring, TF 2.21: a SavedModel
        # holding one cannot be loaded back with tf.saved_model.load).
        model = sharding.unsharded_copy(model)
    raw = raw_spec(cfg.data)
    # serving_steps is cached per process (pipeline._STATS_CACHE), so the
    # graph and the steps file below get the same statistics.
    prep = preprocessor(serving_steps(cfg.data), raw)

    def serve(features):
        x = prep(features)
        return {OUTPUT_KEY: model(x, training=False)}

    fn = tf.function(lambda **kw: serve(kw))
    concrete = fn.get_concrete_function(**raw)
    module = tf.Module()
    # Keras 3 layers are trackable: the module saves the model's variables,
    # and lookup tables captured by the preprocessing come along with the graph.
    module.model = model
    module.tables = list(prep.resources)  # vocab_lookup's tables (untracked, the save would fail)
    module.serve = fn
    path = base / str(version)
    tmp = path.with_name(path.name + ".tmp")
    tf.saved_model.save(module, str(tmp), signatures={"serving_default": concrete})
    # The steps as run inside the graph, statistics included: a record of what
    # the export does, and what the naive baseline replays (TF Serving ignores
    # assets.extra/ files it does not know).
    (tmp / "assets.extra").mkdir(exist_ok=True)
    (tmp / "assets.extra" / STEPS_FILE).write_text(json.dumps(list(serving_steps(cfg.data)), indent=1))
    # TF Serving polls the base directory: a half-written version must never
    # appear under its final numeric name.
    os.replace(tmp, path)
    return path


def export_run(workdir, version: int | None = None, name: str | None = None) -> Path:
    """Exports a finished run (`workdir/config.yaml` + `model.keras`) to `workdir/export/<name>/<version>`."""
    workdir = Path(workdir)
    cfg = config_lib.load(workdir / "config.yaml")
    model = keras.models.load_model(workdir / "model.keras", compile=False)
    return export(model, cfg, workdir / "export" / model_name(cfg, name), version)


def model_name(cfg, name: str | None = None) -> str:
    """The served name: `name`, else `export.name`, else `model.name`."""
    name = name or cfg.export.name or cfg.model.name
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise config_lib.ConfigError(f"export.name: expected letters, digits, '_', '.' or '-'. Received: {name!r}")
    return name


def main(argv) -> int:
    """`tfpipe export`: parses argv (without the program name), exports a finished run; returns the exit code."""
    import argparse  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel

    p = argparse.ArgumentParser(prog="tfpipe export", description="Export a run for serving (TF Serving layout).")
    p.add_argument("--workdir", required=True, help="a finished run: config.yaml and model.keras")
    p.add_argument("--version", type=int, default=None, help="default: one above the highest existing version")
    p.add_argument("--name", default=None, help="default: export.name, else model.name")
    args = p.parse_args(argv)
    for need in ("config.yaml", "model.keras"):
        if not (Path(args.workdir) / need).exists():
            print(f"error: --workdir {args.workdir}: expected a finished run holding {need}. Received: no such file",
                  file=sys.stderr)
            return 2
    if args.version is not None and args.version < 1:
        print(f"error: --version: expected an integer >= 1. Received: {args.version}", file=sys.stderr)
        return 2
    try:
        path = export_run(args.workdir, args.version, args.name)
    except (config_lib.ConfigError, FileExistsError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"[tfpipe] exported serving_default -> {path}", flush=True)
    return 0
