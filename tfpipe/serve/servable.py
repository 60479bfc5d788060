"""A loaded export: its signature, TF Serving's status and metadata JSON, and request decoding.

Request bodies follow TensorFlow Serving's REST predict API: `instances`
(row format: one entry per example; with several named inputs each entry
is an object) or `inputs` (columnar: the batch of one input, or an object
of input name -> batch). Strings may be given as `{"b64": "..."}`. Every
problem is a `BadRequest` whose message names the field and what was
expected, and becomes a 400 with `{"error": "..."}`.
"""

from __future__ import annotations

import base64
import dataclasses
from pathlib import Path

import numpy as np
import tensorflow as tf


class BadRequest(ValueError):
    """A request the server cannot run: the message names the field."""


class ModelNotFound(LookupError):
    """No servable version under the given directory."""


# numpy kinds a JSON value may arrive as, per signature dtype kind.
_ACCEPTED_KINDS = {"f": "iuf", "i": "iu", "u": "iu", "b": "b", "O": "OU"}


@dataclasses.dataclass
class Servable:
    name: str
    version: int
    path: Path
    fn: object  # the concrete `serving_default` function
    inputs: dict  # name -> tf.TensorSpec
    outputs: dict  # name -> tf.TensorSpec

    def status(self) -> dict:
        """TF Serving's GetModelStatusResponse as JSON."""
        return {"model_version_status": [
            {"version": str(self.version), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]}

    def metadata(self) -> dict:
        """TF Serving's GetModelMetadataResponse (signature_def) as JSON."""

        def tensors(specs, prefix):
            return {
                k: {
                    "dtype": "DT_" + v.dtype.name.upper().replace("FLOAT32", "FLOAT").replace("FLOAT64", "DOUBLE"),
                    "tensor_shape": {"dim": [{"size": str(-1 if d is None else d), "name": ""} for d in v.shape],
                                     "unknown_rank": False},
                    "name": f"{prefix}_{k}:0",
                }
                for k, v in specs.items()
            }

        sig = {"inputs": tensors(self.inputs, "serving_default"), "outputs": tensors(self.outputs, "StatefulPartitionedCall"),
               "method_name": "tensorflow/serving/predict"}
        return {
            "model_spec": {"name": self.name, "signature_name": "", "version": str(self.version)},
            "metadata": {"signature_def": {"signature_def": {"serving_default": sig}}},
        }

    # ------------------------------------------------------------ requests

    def decode(self, body, max_rows: int) -> tuple[dict, int, bool]:
        """Request JSON (already parsed) -> ({input: numpy batch}, rows, row_format)."""
        if not isinstance(body, dict):
            raise BadRequest(f"request body: expected a JSON object with 'instances' or 'inputs'. Received: {type(body).__name__}")
        sig = body.get("signature_name", "serving_default") or "serving_default"
        if sig != "serving_default":
            raise BadRequest(f"signature_name: expected 'serving_default'. Received: {sig!r}")
        if ("instances" in body) == ("inputs" in body):
            raise BadRequest("request body: expected exactly one of 'instances' (row format) or 'inputs' (columnar)")
        row_format = "instances" in body
        value = body["instances" if row_format else "inputs"]
        names = list(self.inputs)
        if row_format:
            if not isinstance(value, list) or not value:
                raise BadRequest("instances: expected a non-empty list with one entry per example")
            if len(names) == 1 and not (isinstance(value[0], dict) and set(value[0]) != {"b64"}):
                columns = {names[0]: value}
            else:
                columns = {}
                for name in names:
                    try:
                        columns[name] = [row[name] for row in value]
                    except (KeyError, TypeError):
                        raise BadRequest(f"instances: every entry must be an object holding input {name!r} "
                                         f"(inputs: {', '.join(names)})") from None
            where = "instances"
        else:
            # An object maps input names to batches, except a lone {"b64": ...} value.
            named = isinstance(value, dict) and set(value) != {"b64"}
            columns = value if named else {names[0]: value}
            where = "inputs"
        unknown = sorted(set(columns) - set(names))
        missing = [n for n in names if n not in columns]
        if unknown or missing:
            raise BadRequest(f"{where}: expected inputs {', '.join(names)}. Received: {', '.join(sorted(columns))}")
        arrays = {n: self._array(n, columns[n], where) for n in names}
        rows = {len(a) for a in arrays.values()}
        if len(rows) != 1:
            raise BadRequest(f"{where}: every input needs the same number of rows. Received: "
                             + ", ".join(f"{n} {len(a)}" for n, a in arrays.items()))
        n = rows.pop()
        if n == 0 or n > max_rows:
            raise BadRequest(f"{where}: expected 1 to {max_rows} rows per request. Received: {n}")
        return arrays, n, row_format

    def _array(self, name: str, value, where: str) -> np.ndarray:
        spec = self.inputs[name]
        field = f"{where}.{name}" if len(self.inputs) > 1 else where
        want = spec.dtype.as_numpy_dtype
        if spec.dtype == tf.string:
            value = _bytes(value, field)
        try:
            arr = np.asarray(value) if spec.dtype != tf.string else np.asarray(value, dtype=object)
        except (ValueError, TypeError):
            arr = None
        if arr is None or arr.dtype.kind not in _ACCEPTED_KINDS.get(np.dtype(want).kind, np.dtype(want).kind):
            kinds = {"U": "strings", "f": "floats", "i": "integers", "u": "integers", "b": "booleans"}
            got = "ragged or mixed values" if arr is None else kinds.get(arr.dtype.kind, f"{arr.dtype} values")
            raise BadRequest(f"{field}: expected {spec.dtype.name} values of shape {_shape(spec)}. Received: {got}")
        if arr.ndim == len(spec.shape) - 1:
            raise BadRequest(f"{field}: expected a batch of shape {_shape(spec)} (one entry per example). "
                             f"Received: shape {list(arr.shape)}")
        if arr.ndim != len(spec.shape) or any(d is not None and d != a for d, a in zip(spec.shape[1:], arr.shape[1:])):
            raise BadRequest(f"{field}: expected shape {_shape(spec)}. Received: {list(arr.shape)}")
        return arr if spec.dtype == tf.string else arr.astype(want, copy=False)


def _shape(spec) -> str:
    return "[" + ", ".join("-1" if d is None else str(d) for d in spec.shape) + "]"


def _bytes(value, field):
    """Strings and {"b64": ...} objects, nested in lists, as bytes."""
    if isinstance(value, list):
        return [_bytes(v, field) for v in value]
    if isinstance(value, dict):
        if set(value) != {"b64"} or not isinstance(value["b64"], str):
            raise BadRequest(f"{field}: expected a string or {{\"b64\": <base64 string>}}. Received: an object with keys "
                             f"{', '.join(sorted(value))}")
        try:
            return base64.b64decode(value["b64"], validate=True)
        except ValueError:
            raise BadRequest(f"{field}: invalid base64 in a 'b64' value") from None
    if isinstance(value, str):
        return value.encode()
    raise BadRequest(f"{field}: expected strings or {{\"b64\": ...}} objects. Received: {type(value).__name__}")


def resolve(model_dir) -> tuple[Path, int]:
    """`export/<name>` (highest numeric version, as TF Serving picks) or a version directory itself."""
    path = Path(model_dir)
    if (path / "saved_model.pb").exists():
        return path, int(path.name) if path.name.isdigit() else 1
    versions = sorted((int(p.name) for p in path.iterdir() if p.name.isdigit() and (p / "saved_model.pb").exists())
                      if path.is_dir() else [])
    if not versions:
        raise ModelNotFound(f"--model_dir {model_dir}: expected a SavedModel or numeric version directories "
                            "holding saved_model.pb (export/<name>/<version>/). Received: none found")
    return path / str(versions[-1]), versions[-1]


def load(model_dir, name: str | None = None) -> Servable:
    """Loads the servable under `model_dir`; the name defaults to the base directory's."""
    path, version = resolve(model_dir)
    loaded = tf.saved_model.load(str(path))
    if "serving_default" not in loaded.signatures:
        raise ModelNotFound(f"{path}: has no 'serving_default' signature (signatures: {', '.join(loaded.signatures)})")
    fn = loaded.signatures["serving_default"]
    fn._tfpipe_keepalive = loaded  # pylint: disable=protected-access  # the function needs its module's variables
    _, inputs = fn.structured_input_signature
    base = path.parent if path.name.isdigit() else path
    return Servable(name or base.name, version, path, fn, dict(inputs), dict(fn.structured_outputs))
