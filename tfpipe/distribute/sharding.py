"""Variables split across parameter servers (`runtime.variable_partitioner`): what training needs of them.

Under `parameter_server` with a partitioner, a large variable created in the
strategy's scope becomes a `ShardedVariable`: a list of shards, each on one
ps task. A Keras 3 layer still holds one `keras.Variable` whose `.value` is
that `ShardedVariable`. What this changes, verified on TF 2.21 / Keras 3.15:

- `tape.gradient(loss, model.trainable_variables)` fails ("'ShardedVariable'
  object has no attribute 'handle'"); against the shards it works, and the
  Keras optimizer then keeps each shard's slots beside it on its ps.
  `train_variables(model)` is that list.
- `tf.train.Checkpoint` fails to save it ("'ShardedVariable' object has no
  attribute 'device'"): the Keras wrapper hands the whole `ShardedVariable`
  to the saver as if it were one tensor. `make_checkpointable` lets the
  wrapper save the shards as slices of one full tensor instead, TF's own
  format for `ShardedVariable`, so the weights restore into any number of
  shards, or into a plain variable, and back.
- The optimizer's slots are one variable per shard (Keras numbers them in
  its list), so optimizer state does not follow a change in the number of
  shards: `layout` records the split beside the checkpoints and
  `check_layout` refuses a resume into another one, in one line.
"""

from __future__ import annotations

import functools
import json
import os

import tensorflow as tf

ShardedVariable = tf.__internal__.distribute.ShardedVariable

LAYOUT_FILE = "sharding.json"


def sharded_value(variable):
    """The `ShardedVariable` behind `variable` (a Keras or tf variable), or None."""
    value = getattr(variable, "value", variable)
    return value if isinstance(value, ShardedVariable) else None


def any_sharded(model) -> bool:
    return any(sharded_value(v) is not None for v in model.variables)


def train_variables(model) -> list:
    """`model.trainable_variables` with each sharded variable replaced by its shards.

    The list gradients are taken against and the optimizer applies to; for a
    model without sharded variables it is `model.trainable_variables` itself.
    """
    variables = model.trainable_variables
    if not any(sharded_value(v) is not None for v in variables):
        return variables
    flat = []
    for v in variables:
        sharded = sharded_value(v)
        flat.extend(sharded.variables if sharded is not None else [v])
    return flat


class _ShardedKerasVariable(tf.__internal__.tracking.Trackable):
    """Mixed into a Keras variable whose value is sharded: checkpoints it as slices of one tensor.

    The checkpoint machinery takes the legacy `_gather_saveables_for_checkpoint`
    when a class defines it before `_serialize_to_tensors` in its MRO; the
    `ShardedVariable`'s own saveables write each shard as a slice of the full
    variable (TF's format for partitioned variables).
    """

    def _gather_saveables_for_checkpoint(self):
        sharded = sharded_value(self)
        if sharded is not None:
            return sharded._gather_saveables_for_checkpoint()  # pylint: disable=protected-access
        from tensorflow.python.training.saving import saveable_object_util  # pylint: disable=import-outside-toplevel

        return {"VARIABLE_VALUE": functools.partial(saveable_object_util.ResourceVariableSaveable, self.value, "")}


@functools.lru_cache(maxsize=None)
def _checkpointable_class(cls):
    return type(f"Sharded{cls.__name__}", (_ShardedKerasVariable, cls), {})


def make_checkpointable(variables) -> int:
    """Lets each Keras variable among `variables` whose value is sharded be checkpointed; returns how many.

    The variable's class becomes a subclass that adds only the checkpoint
    method (no state): the object, its value and every reference to it stay
    the same. Variables that are not sharded are left alone.
    """
    changed = 0
    for v in variables:
        if sharded_value(v) is not None and not isinstance(v, _ShardedKerasVariable) and hasattr(v, "value"):
            v.__class__ = _checkpointable_class(type(v))
            changed += 1
    return changed


def layout(model) -> dict:
    """Each sharded variable of `model`: full shape and, per shard, its shape and device.

    `{"deep_embedding/embeddings": {"shape": [1040000, 16], "shards": [{"shape": [520000, 16],
    "device": "/job:ps/replica:0/task:0/device:CPU:0"}, ...]}}`; empty when nothing is sharded.
    """
    out = {}
    for v in model.variables:
        sharded = sharded_value(v)
        if sharded is None:
            continue
        out[getattr(v, "path", v.name)] = {
            "shape": sharded.shape.as_list(),
            "shards": [{"shape": s.shape.as_list(), "device": s.device} for s in sharded.variables],
        }
    return out


def describe(variables_layout: dict) -> str:
    """One line: `deep_embedding/embeddings [1040000, 16] in 2 shards (ps:0 520000 rows, ps:1 520000 rows); ...`."""

    def task(device):
        spec = tf.DeviceSpec.from_string(device)
        return f"{spec.job}:{spec.task}" if spec.job else device or "local"

    return "; ".join(
        f"{name} {info['shape']} in {len(info['shards'])} shards ("
        + ", ".join(f"{task(s['device'])} {s['shape'][0]} rows" for s in info["shards"]) + ")"
        for name, info in variables_layout.items()
    )


def _rows(variables_layout: dict) -> dict:
    return {name: [s["shape"][0] for s in info["shards"]] for name, info in variables_layout.items()}


def check_layout(checkpoint_dir, variables_layout: dict, has_checkpoint: bool) -> None:
    """Raises ValueError (one line) when the checkpoints were written with other shards than this run's.

    Does nothing for a fresh run. Checkpoints without the record were written
    with nothing sharded (the record is written whenever something is), so a
    sharded run cannot resume from them either.
    """
    path = os.path.join(os.fspath(checkpoint_dir), LAYOUT_FILE)
    if not has_checkpoint:
        return
    saved = {}
    if tf.io.gfile.exists(path):
        with tf.io.gfile.GFile(path) as f:
            saved = json.load(f)
    if _rows(saved) == _rows(variables_layout):
        return

    def show(lay):
        return "; ".join(f"{k} rows {'+'.join(map(str, v))}" for k, v in sorted(_rows(lay).items())) or "nothing sharded"

    raise ValueError(
        f"{checkpoint_dir}: the checkpoints hold variables split as [{show(saved)}], this run splits them as "
        f"[{show(variables_layout)}]; the weights could be read into the new split, but the optimizer keeps one "
        "slot per shard, which cannot: resume with the same number of ps tasks and runtime.variable_partitioner, "
        "or start a new workdir"
    )


def write_layout(checkpoint_dir, variables_layout: dict) -> None:
    """Records the split beside the checkpoints (what `check_layout` reads on resume)."""
    tf.io.gfile.makedirs(os.fspath(checkpoint_dir))
    with tf.io.gfile.GFile(os.path.join(os.fspath(checkpoint_dir), LAYOUT_FILE), "w") as f:
        json.dump(variables_layout, f, indent=1)


def unsharded_copy(model):
    """A copy of `model` with plain (whole, local) variables holding the same values.

    Call it outside the strategy's scope, so that nothing is placed on a ps
    task or split: what a SavedModel for serving, or `model.keras`, holds.

    Raises:
        tfpipe.ConfigError: Keras cannot clone the model (a subclassed model
            without `get_config`): one line, the user's to fix.
        ValueError: the copy came out sharded (called in scope).
    """
    import keras  # pylint: disable=import-outside-toplevel

    from tfpipe import config as config_lib  # pylint: disable=import-outside-toplevel

    try:
        copy = keras.models.clone_model(model)
    except Exception as e:  # pylint: disable=broad-except
        raise config_lib.ConfigError(
            f"runtime.variable_partitioner: model {model.name!r} has sharded variables and Keras cannot clone "
            f"it to gather them ({type(e).__name__}: {str(e).strip().splitlines()[0][:200]}); give the model get_config()"
        ) from None
    if any_sharded(copy):
        raise ValueError("unsharded_copy: called inside a parameter_server strategy's scope; call it outside")
    copy.set_weights(model.get_weights())  # a ShardedVariable reads as its shards concatenated
    return copy
