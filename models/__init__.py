"""Keras model builders, looked up by the config's `model.name`.

Every builder takes `input_shape`, `num_classes` and its own keyword
arguments (the config's `model.params`) and returns an uncompiled
`keras.Model`; tfpipe's training loop supplies optimizer, loss and metrics.

`model.name` may also be an import path, `my_pkg.nets:build`, naming a
builder of the same form outside tfpipe.
"""

from __future__ import annotations

import inspect

from tfpipe import importpath
from tfpipe.models import cnn, features, layers, mlp, resnet, wide_deep  # noqa: F401  # features: shared checks; layers: for builders

# Dispatch by plain dict: add a model by adding a line here.
MODELS = {
    "mlp": mlp.build,
    "cnn": cnn.build,
    "resnet": resnet.build,
    "wide_deep": wide_deep.build,
}


def builder(name: str, where: str = "config"):
    """The builder `name` names: a key of `MODELS` or a `module:function` path."""
    if importpath.is_import_path(name):
        try:
            return importpath.load(name, "model.name")
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
    if name not in MODELS:
        raise ValueError(
            f"{where}: model.name: expected one of {', '.join(sorted(MODELS))} or module:function, got {name!r}"
        )
    return MODELS[name]


def check(name: str, params: dict, where: str = "config") -> None:
    """Raises ValueError if the model is unknown or its params do not fit the builder."""
    sig = inspect.signature(builder(name, where))
    try:
        sig.bind(None, None, **params)
    except TypeError as e:
        accepted = ", ".join(list(sig.parameters)[2:])
        raise ValueError(f"{where}: model.params ({name}): {e}; accepted: {accepted}") from None


def check_features(name: str, features_spec) -> None:
    """Raises ValueError when a built-in model would get string features (undecoded images, text columns)."""
    if name not in MODELS:
        return  # the user's own builder decides what it takes
    if isinstance(features_spec, dict) and name != "wide_deep":
        return  # the builder names the step that joins dict features (concat_columns)
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    flat = tf.nest.flatten(features_spec)
    paths = list(features_spec) if isinstance(features_spec, dict) else [""]
    for path, spec in zip(sorted(paths) if isinstance(features_spec, dict) else paths, flat):
        if spec.dtype == tf.string:
            what = f"feature {path!r}" if path else "the features"
            raise ValueError(
                f"model {name} expects numbers, but {what} are strings; decode image bytes with "
                "{op: decode_image} (then {op: resize, size: N}), map string columns to ids with "
                "{op: vocab_lookup, ...} or {op: hash_columns, ...}, or leave them out of {op: concat_columns, ...}"
            )


def build(name: str, input_shape, num_classes: int, params: dict):
    """The model `name` built for `input_shape` features and `num_classes` outputs."""
    check(name, params)
    return builder(name)(input_shape, num_classes, **params)
