"""Training recipes: what the recipe keys mean, checked at load without TensorFlow.

The keys (README, "Training recipes"):

- `optimizer.schedule`: the learning rate over training (`schedules.py`);
- `optimizer.weight_decay`, `model.l2`: decoupled decay, kernel L2 in the loss;
- `optimizer.clipnorm`, `.global_clipnorm`: clipping of the all-reduced gradient (`steps.py`);
- `train.label_smoothing`, `train.class_weights`: the training loss (`losses.py`);
- `train.metrics`: what is reported beside the loss (`metrics.py`);
- `train.early_stopping`: stop on a validation metric, keep the best weights (`stopping.py`).

This module holds the names and the checks `tfpipe.config.load` runs, so a
typo fails before TensorFlow starts.
"""

from __future__ import annotations

import re

CLASSIFICATION_LOSSES = ("auto", "categorical_crossentropy", "sparse_categorical_crossentropy", "binary_crossentropy")
METRICS = ("accuracy", "top_k", "auc", "precision", "recall", "mae", "mse")
REGRESSION_METRICS = ("mae", "mse")
# Smaller is better for these; larger for the others (accuracy, auc, ...).
_MINIMIZED = ("loss", "mae", "mse")
_TOP = re.compile(r"top_(\d+)")


def is_classification(loss: str) -> bool:
    """Whether `model.loss` is a class loss (cross-entropy; `auto` decides between two of them)."""
    return loss in CLASSIFICATION_LOSSES


def top_k(name: str) -> int | None:
    """k of a top-k metric name (`top_k` is 5, `top_3` is 3), else None."""
    if name == "top_k":
        return 5
    m = _TOP.fullmatch(name)
    return int(m.group(1)) if m else None


def metric_key(name: str) -> str:
    """The name a metric is reported under (history.json, metrics.json, TensorBoard)."""
    k = top_k(name)
    return f"top_{k}_accuracy" if k else name


def metric_names(train_cfg, loss: str) -> list[str]:
    """`train.metrics`, or its default: accuracy for a class loss, mae for regression."""
    if train_cfg.metrics:
        return list(train_cfg.metrics)
    return ["accuracy"] if is_classification(loss) else ["mae"]


def reported(cfg) -> list[str]:
    """Keys of one evaluation: loss and the metrics' keys."""
    return ["loss"] + [metric_key(n) for n in metric_names(cfg.train, cfg.model.loss)]


def mode(monitor: str, mode_: str = "auto") -> str:
    """min or max for a monitored `val_<key>`."""
    if mode_ != "auto":
        return mode_
    return "min" if monitor.removeprefix("val_") in _MINIMIZED else "max"


def _check_monitor(key: str, monitor: str, cfg) -> None:
    keys = reported(cfg)
    if not monitor.startswith("val_") or monitor[len("val_"):] not in keys:
        raise ValueError(
            f"{key}: expected a validation metric, one of {', '.join('val_' + k for k in keys)} "
            f"(train.metrics adds more), got {monitor!r}"
        )


def _check_class_weights(value) -> None:
    if value is None or value == "balanced":
        return
    expected = "'balanced', a list of weights (one per class) or a mapping class id -> weight"
    if isinstance(value, str):
        raise ValueError(f"train.class_weights: expected {expected}, got {value!r}")
    if isinstance(value, (list, tuple)):
        items = list(enumerate(value))
    elif isinstance(value, dict):
        items = list(value.items())
        for k, _ in items:
            if isinstance(k, bool) or not isinstance(k, int) or k < 0:
                raise ValueError(f"train.class_weights: class ids must be integers >= 0, got {k!r}")
    else:
        raise ValueError(f"train.class_weights: expected {expected}, got {type(value).__name__} {value!r}")
    if not items:
        raise ValueError(f"train.class_weights: expected {expected}, got an empty {type(value).__name__}")
    for k, w in items:
        if isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0:
            raise ValueError(f"train.class_weights: weight of class {k}: expected a number >= 0, got {w!r}")


def _check_schedule(s) -> None:
    key = "optimizer.schedule"
    if s.name == "piecewise":
        if len(s.values) != len(s.boundaries) + 1 or not s.values:
            raise ValueError(
                f"{key}: piecewise needs one more value than boundaries (values[i] holds from boundaries[i-1] on), "
                f"got {len(s.boundaries)} boundaries and {len(s.values)} values"
            )
        for what, seq in (("boundaries", s.boundaries), ("values", s.values)):
            if any(isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 for v in seq):
                raise ValueError(f"{key}.{what}: expected numbers >= 0, got {list(seq)}")
        if list(s.boundaries) != sorted(s.boundaries) or len(set(s.boundaries)) != len(s.boundaries):
            raise ValueError(f"{key}.boundaries: expected increasing positions, got {list(s.boundaries)}")
    elif s.boundaries or s.values:
        raise ValueError(f"{key}: boundaries and values are for name: piecewise, got name: {s.name}")
    if s.name in ("step", "exponential") and s.every <= 0:
        raise ValueError(f"{key}.every: {s.name} decays every `every` {s.unit}; expected a value > 0, got {s.every}")
    if s.name in ("step", "exponential", "plateau") and not 0 < s.decay_rate <= 1:
        raise ValueError(f"{key}.decay_rate: expected a multiplier in (0, 1], got {s.decay_rate}")


def check(cfg) -> None:
    """Raises ValueError (one line, naming the key) for recipe keys that cannot run.

    What needs the data (class counts, a validation split, kernels in the
    model) is checked when the run starts.
    """
    loss = cfg.model.loss
    for name in cfg.train.metrics:
        if not isinstance(name, str) or (name not in METRICS and top_k(name) is None):
            raise ValueError(f"train.metrics: expected names from {', '.join(METRICS)} (or top_3, ...), got {name!r}")
        if name in REGRESSION_METRICS and is_classification(loss):
            raise ValueError(f"train.metrics: {name} is a regression metric; model.loss {loss!r} is a class loss")
        if name not in REGRESSION_METRICS and not is_classification(loss):
            raise ValueError(f"train.metrics: {name} is a class metric; model.loss {loss!r} is a regression loss")
        if top_k(name) is not None and top_k(name) < 1:
            raise ValueError(f"train.metrics: {name}: k must be >= 1")
    if len(set(cfg.train.metrics)) != len(cfg.train.metrics):
        raise ValueError(f"train.metrics: names a metric twice: {list(cfg.train.metrics)}")
    if not is_classification(loss) and (cfg.train.label_smoothing or cfg.train.class_weights is not None):
        raise ValueError(f"train.label_smoothing and train.class_weights are for class losses, not {loss!r}")
    _check_class_weights(cfg.train.class_weights)
    opt = cfg.optimizer
    if opt.clipnorm and opt.global_clipnorm:
        raise ValueError("optimizer.clipnorm and optimizer.global_clipnorm: set one of them, not both")
    _check_schedule(opt.schedule)
    if opt.schedule.name == "plateau":
        _check_monitor("optimizer.schedule.monitor", opt.schedule.monitor, cfg)
    if cfg.train.early_stopping.enabled:
        _check_monitor("train.early_stopping.monitor", cfg.train.early_stopping.monitor, cfg)
