"""The feature spec of TFRecord files of `tf.train.Example`: what each record holds.

A spec maps a feature name to `{dtype, shape, var_len}`; it comes from the
config (`data.tfrecord.features`), from the `spec.json` that
`scripts/make_tfrecords.py` writes next to its shards
(`data.tfrecord.spec_file`), or both (the config wins per feature).

Example spec.json:

```json
{"features": {"image": {"dtype": "string", "shape": []},
              "label": {"dtype": "int64", "shape": []}},
 "num_classes": 10, "counts": {"train-00000-of-00004.tfrecord": 2500}}
```
"""

from __future__ import annotations

import dataclasses
import json
import os

import tensorflow as tf

DTYPES = {"float32": tf.float32, "int64": tf.int64, "string": tf.string}


@dataclasses.dataclass(frozen=True)
class Feature:
    dtype: str
    shape: tuple
    var_len: bool = False

    def parser(self):
        """The `tf.io` feature description used by `tf.io.parse_example`."""
        if self.var_len:
            return tf.io.VarLenFeature(DTYPES[self.dtype])
        return tf.io.FixedLenFeature(list(self.shape), DTYPES[self.dtype])


@dataclasses.dataclass(frozen=True)
class Spec:
    features: dict  # name -> Feature
    num_classes: int = 0
    # File base name -> number of records; lets sources count without reading.
    counts: dict = dataclasses.field(default_factory=dict)

    def parsers(self) -> dict:
        return {name: f.parser() for name, f in self.features.items()}


def parse_feature(name: str, raw, where: str) -> Feature:
    """One feature from its config/JSON mapping; raises ValueError naming it."""
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: feature {name!r}: expected a mapping with dtype and shape, got {raw!r}")
    unknown = set(raw) - {"dtype", "shape", "var_len"}
    if unknown:
        raise ValueError(f"{where}: feature {name!r}: unknown keys {sorted(unknown)}; expected dtype, shape, var_len")
    dtype = raw.get("dtype")
    if dtype not in DTYPES:
        raise ValueError(f"{where}: feature {name!r}: dtype: expected one of {', '.join(DTYPES)}, got {dtype!r}")
    shape = raw.get("shape", [])
    if not isinstance(shape, (list, tuple)) or not all(isinstance(d, int) and d > 0 for d in shape):
        raise ValueError(f"{where}: feature {name!r}: shape: expected a list of positive integers, got {shape!r}")
    var_len = raw.get("var_len", False)
    if not isinstance(var_len, bool):
        raise ValueError(f"{where}: feature {name!r}: var_len: expected true or false, got {var_len!r}")
    return Feature(dtype, tuple(shape), var_len)


def load(tfrecord_cfg) -> Spec:
    """The spec described by a `TFRecordConfig`: spec_file, then config features on top.

    Raises:
        ValueError: naming the spec file or config key when it is missing or malformed.
    """
    features, num_classes, counts = {}, 0, {}
    if tfrecord_cfg.spec_file:
        path = tfrecord_cfg.spec_file
        if not os.path.exists(path):
            raise ValueError(f"data.tfrecord.spec_file: {path}: no such file")
        try:
            with open(path, encoding="utf-8") as f:
                raw = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON: {e}") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("features"), dict):
            raise ValueError(f"{path}: expected a JSON object with a 'features' mapping")
        features = {k: parse_feature(k, v, path) for k, v in raw["features"].items()}
        num_classes = int(raw.get("num_classes", 0))
        counts = dict(raw.get("counts", {}))
    for name, raw in tfrecord_cfg.features.items():
        features[name] = parse_feature(name, raw, "data.tfrecord.features")
    if not features:
        raise ValueError("data.tfrecord: expected a feature spec in spec_file or features, got neither")
    if tfrecord_cfg.label_key and tfrecord_cfg.label_key not in features:
        raise ValueError(
            f"data.tfrecord.label_key: {tfrecord_cfg.label_key!r} is not a feature of the spec "
            f"(features: {', '.join(sorted(features))})"
        )
    return Spec(features, num_classes, counts)


def write(path: str, features: dict, num_classes: int, counts: dict) -> None:
    """Writes a spec.json that `load` (and a config's spec_file) reads."""
    raw = {
        "features": {
            k: {"dtype": f.dtype, "shape": list(f.shape), **({"var_len": True} if f.var_len else {})}
            for k, f in features.items()
        },
        "num_classes": num_classes,
        "counts": counts,
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(raw, f, indent=2)
