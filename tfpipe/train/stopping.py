"""`train.early_stopping`: stop when a validation metric stops improving; keep the best weights.

After each epoch's validation the monitored value (`val_loss`, `val_auc`, ...)
is compared with the best so far: better by more than `min_delta` makes it
the new best, and (with `restore_best`) the model's weights are copied
into variables beside it; otherwise the wait grows, and at `patience`
epochs without an improvement the run stops. Before the test evaluation
and the export the best weights are put back, so `model.keras`,
`metrics.json` and the serving export are the best epoch's.

The best value, its epoch, the wait, whether the run stopped, and the best
weights are variables in every checkpoint: a run killed and resumed waits
exactly as an uninterrupted one, and a stopped run is not trained on.
"""

from __future__ import annotations

import tensorflow as tf

from tfpipe.train import recipes
from tfpipe.train.schedules import Watch


class EarlyStopping:
    """The stopping rule of one run; build in the strategy's scope (the weight copies mirror the model's).

    Args:
        stopping_cfg: a `tfpipe.config.EarlyStoppingConfig`.
        model: the model being trained.
    """

    def __init__(self, stopping_cfg, model):
        self.cfg, self.model = stopping_cfg, model
        self.watch = Watch(stopping_cfg.monitor, recipes.mode(stopping_cfg.monitor, stopping_cfg.mode),
                           stopping_cfg.min_delta)
        self.stopped_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="stopped_epoch")
        self.best_weights = (
            [tf.Variable(tf.convert_to_tensor(w), trainable=False, name=f"best_{i}")
             for i, w in enumerate(model.weights)]
            if stopping_cfg.restore_best else []
        )

    def trackables(self) -> dict:
        tracked = {"stopped_epoch": self.stopped_epoch, **self.watch.trackables()}
        tracked.update({f"w{i}": w for i, w in enumerate(self.best_weights)})
        return tracked

    @property
    def stopped(self) -> bool:
        return int(self.stopped_epoch.numpy()) > 0

    def update(self, val: dict, epoch: int) -> str | None:
        """After epoch `epoch` (1-based); returns the note to print when the run stops."""
        value = self.watch.value(val)
        if self.watch.improved(value, epoch):
            for copy, weight in zip(self.best_weights, self.model.weights):
                copy.assign(weight)
            return None
        if int(self.watch.wait.numpy()) < self.cfg.patience:
            return None
        self.stopped_epoch.assign(epoch)
        return (f"early stopping: {self.cfg.monitor} no better than {self.best:.4f} (epoch {self.best_epoch}) "
                f"by {self.cfg.min_delta:g} for {self.cfg.patience} epochs")

    @property
    def best(self) -> float:
        return float(self.watch.best.numpy())

    @property
    def best_epoch(self) -> int:
        return int(self.watch.best_epoch.numpy())

    def restore_best(self) -> bool:
        """Puts the best epoch's weights back into the model; False when there are none to restore."""
        if not self.best_weights or not self.best_epoch:
            return False
        for weight, copy in zip(self.model.weights, self.best_weights):
            weight.assign(copy)
        return True

    def summary(self, epochs_run: int) -> dict:
        """What metrics.json says about it."""
        return {
            "monitor": self.cfg.monitor,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "stopped_epoch": int(self.stopped_epoch.numpy()) or None,
            "epochs_run": epochs_run,
            "restored_best": bool(self.best_weights and self.best_epoch),
        }
