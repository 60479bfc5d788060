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
from tfpipe.models import cnn, mlp, resnet, wide_deep

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


def build(name: str, input_shape, num_classes: int, params: dict):
    """The model `name` built for `input_shape` features and `num_classes` outputs."""
    check(name, params)
    return builder(name)(input_shape, num_classes, **params)
