"""Learning-rate schedules (`optimizer.schedule`) and the watch on a validation metric.

The rate at optimizer step t (0-based; Keras's `optimizer.iterations`, which
a checkpoint holds, so a resumed run continues the schedule where it was) is

    learning_rate * warm(t) * factor(t) * scale

- `warm(t)`: with `warmup` W > 0, `min(1, (t + 1) / W)`: step 0 already
  moves (at 1/W of the rate), step W - 1 runs at the full rate.
- `factor(t)` by `name`: `constant` 1; `piecewise` `values[i]` from
  `boundaries[i-1]` on; `step` `decay_rate ** floor(t / every)`;
  `exponential` `decay_rate ** (t / every)`; `cosine` from 1 down to
  `alpha` over `length` after the warm-up (0 = until the end of training),
  then `alpha`; `plateau` 1.
- `scale`: 1, lowered by `decay_rate` by `Plateau` when the monitored
  validation metric stops improving (a variable in the checkpoint).

Positions are in `unit` (epochs, converted with the run's steps per epoch,
or steps) and rounded to whole steps.

Example:

```python
cfg = tfpipe.load_config(overrides=["optimizer.schedule.name=cosine", "optimizer.schedule.warmup=2"])
schedule = Schedule(1e-3, cfg.optimizer.schedule, steps_per_epoch=40, total_steps=400)
float(schedule(0)), float(schedule(79)), float(schedule(399))   # 1.25e-05, 1e-3, ~1.5e-08
```
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf


class Schedule(keras.optimizers.schedules.LearningRateSchedule):
    """`optimizer.schedule` as a Keras schedule, evaluated at `optimizer.iterations`.

    Args:
        base: `optimizer.learning_rate` (after `runtime.lr_scaling`).
        schedule_cfg: a `tfpipe.config.ScheduleConfig`.
        steps_per_epoch, total_steps: the run's; turn epochs into steps.
        scale: a float32 variable multiplying the rate (`Plateau` lowers it);
            None for a constant 1.
    """

    def __init__(self, base: float, schedule_cfg, steps_per_epoch: int, total_steps: int, scale=None):
        self.base, self.cfg, self.scale = float(base), schedule_cfg, scale
        self.steps_per_epoch, self.total_steps = int(steps_per_epoch), int(total_steps)
        s = schedule_cfg
        self.warmup = self.steps(s.warmup)
        self.boundaries = [self.steps(b) for b in s.boundaries]
        self.every = max(1, self.steps(s.every))
        self.length = max(1, self.steps(s.length) if s.length else self.total_steps - self.warmup)

    def steps(self, position: float) -> int:
        """A position in `unit` as whole steps."""
        return int(round(position * (self.steps_per_epoch if self.cfg.unit == "epochs" else 1)))

    def factor(self, t):
        """The schedule's multiplier at step `t` (a float32 tensor), before warm-up and scale."""
        s = self.cfg
        if s.name == "piecewise":
            index = 0
            if self.boundaries:  # how many boundaries t has passed
                index = tf.reduce_sum(tf.cast(t >= tf.constant(self.boundaries, tf.float32), tf.int32))
            return tf.gather(tf.constant(s.values, tf.float32), index)
        if s.name == "step":
            return tf.pow(tf.constant(s.decay_rate, tf.float32), tf.floor(t / self.every))
        if s.name == "exponential":
            return tf.pow(tf.constant(s.decay_rate, tf.float32), t / self.every)
        if s.name == "cosine":
            progress = tf.clip_by_value((t - self.warmup) / self.length, 0.0, 1.0)
            return s.alpha + (1.0 - s.alpha) * 0.5 * (1.0 + tf.cos(math.pi * progress))
        return tf.constant(1.0)  # constant, plateau

    def __call__(self, step):
        t = tf.cast(step, tf.float32)
        rate = self.base * self.factor(t)
        if self.warmup:
            rate *= tf.minimum(1.0, (t + 1.0) / self.warmup)
        if self.scale is not None:
            rate *= tf.cast(self.scale, tf.float32)
        return rate

    def get_config(self):
        return {"base": self.base, "name": self.cfg.name, "warmup": self.warmup, "total_steps": self.total_steps}


class Watch:
    """The best value of a monitored validation metric and the epochs since it improved.

    Kept in variables, so that a checkpoint holds them and a resumed run
    waits exactly as an uninterrupted one would.

    Args:
        monitor: `val_<key>`.
        mode: min or max.
        min_delta: an improvement must beat the best by more than this.
    """

    def __init__(self, monitor: str, mode: str, min_delta: float):
        self.monitor, self.mode, self.min_delta = monitor, mode, float(min_delta)
        worst = np.inf if mode == "min" else -np.inf
        self.best = tf.Variable(worst, dtype=tf.float64, trainable=False, name="best")
        self.wait = tf.Variable(0, dtype=tf.int64, trainable=False, name="wait")
        self.best_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="best_epoch")

    def trackables(self) -> dict:
        return {"best": self.best, "wait": self.wait, "best_epoch": self.best_epoch}

    def value(self, val: dict) -> float:
        """The monitored value from one validation result (`{'loss': ..., 'accuracy': ...}`)."""
        return float(val[self.monitor.removeprefix("val_")])

    def improved(self, value: float, epoch: int) -> bool:
        """Records one epoch's value; True when it is a new best (then wait is 0)."""
        best = float(self.best.numpy())
        better = value < best - self.min_delta if self.mode == "min" else value > best + self.min_delta
        if better:
            self.best.assign(value)
            self.best_epoch.assign(epoch)
            self.wait.assign(0)
        else:
            self.wait.assign_add(1)
        return better


class Plateau:
    """`optimizer.schedule.name: plateau`: lowers the rate when the monitored metric stops improving.

    Args:
        schedule_cfg: a `tfpipe.config.ScheduleConfig`.
        base: the base learning rate (`min_lr` is a floor on the rate, so on `scale * base`).
        mode: min or max (see `tfpipe.train.recipes.mode`).

    Create it in the strategy's scope: `scale` is read inside every replica's step.
    """

    def __init__(self, schedule_cfg, base: float, mode: str):
        self.cfg, self.base = schedule_cfg, float(base)
        self.scale = tf.Variable(1.0, dtype=tf.float32, trainable=False, name="lr_scale")
        self.watch = Watch(schedule_cfg.monitor, mode, schedule_cfg.min_delta)

    def trackables(self) -> dict:
        return {"lr_scale": self.scale, **self.watch.trackables()}

    def update(self, val: dict, epoch: int) -> str | None:
        """After epoch `epoch`'s validation; returns a note when the rate was lowered."""
        self.watch.improved(self.watch.value(val), epoch)
        if int(self.watch.wait.numpy()) < self.cfg.patience:
            return None
        self.watch.wait.assign(0)
        old = float(self.scale.numpy())
        floor = self.cfg.min_lr / self.base if self.base else 0.0
        new = max(old * self.cfg.decay_rate, floor)
        if new >= old:
            return None
        self.scale.assign(new)
        return (f"{self.cfg.monitor} no better for {self.cfg.patience} epochs: "
                f"learning rate x{self.cfg.decay_rate:g} -> {new * self.base:.3g}")


def build_optimizer(cfg, learning_rate: float, steps_per_epoch: int, total_steps: int, mode: str = "min"):
    """The run's optimizer with `optimizer.schedule`; build in the strategy's scope.

    Args:
        cfg: the run's `Config`.
        learning_rate: the base rate (after `runtime.lr_scaling`).
        steps_per_epoch, total_steps: the run's.
        mode: min or max for a plateau's monitor.

    Returns:
        `(optimizer, plateau)`: plateau is a `Plateau` or None.
    """
    from tfpipe.train import optimizers  # pylint: disable=import-outside-toplevel

    s = cfg.optimizer.schedule
    plateau = Plateau(s, learning_rate, mode) if s.name == "plateau" else None
    if s.name == "constant" and not s.warmup:
        rate = learning_rate  # a plain float: Keras keeps it in a variable, as before
    else:
        rate = Schedule(learning_rate, s, steps_per_epoch, total_steps, scale=plateau.scale if plateau else None)
    return optimizers.build(cfg.optimizer, rate), plateau


def current_rate(optimizer) -> float:
    """The rate the optimizer's next step uses (the schedule at its `iterations`)."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer
    return float(tf.convert_to_tensor(inner.learning_rate))
