"""Checkpoints of a run: what they hold, when they are written, how they are read back.

A checkpoint holds everything the next step depends on: model weights,
optimizer slots and iteration count, the step counter, the dropout random
state, and (see `tfpipe.train.inputs`) the input position. Restoring it and
training on gives the same weights as never having stopped.

Writing is atomic as far as a reader of the directory can tell: TensorFlow
writes the tensors under `<prefix>_temp/`, renames them into place, writes
the `.index`, and only then replaces the `checkpoint` state file (by writing
a temporary file and renaming it). A process killed mid-save therefore
leaves the previous checkpoint as the latest one. Nothing is fsynced, so a
machine crash or a bad disk can still leave a listed checkpoint unreadable:
`Checkpointer.restore` then falls back to the next older one, with a warning
naming the file, and fails only when none can be read.

Example:

```python
ckpt = Checkpointer("runs/x/checkpoints", keep=3, every_steps=100,
                    model=model, optimizer=optimizer, step=step)
ckpt.restore()           # None on a fresh run, else the path restored
...
if ckpt.due(int(step)):
    ckpt.save(int(step))
```
"""

from __future__ import annotations

import os
import re

import tensorflow as tf
from absl import logging

# Keras 3 keeps a dropout layer's random state in a variable of this name.
# It is in `model.variables` but not in what `tf.train.Checkpoint(model=...)`
# tracks (verified on Keras 3.15), so without it a resumed run would draw
# different dropout masks than an uninterrupted one.
_SEED_STATE_NAME = "seed_generator_state"


class CheckpointError(RuntimeError):
    """No checkpoint in the directory can be restored."""


def random_state(model) -> dict:
    """The model's random-number state variables that `model` itself does not checkpoint."""
    return {f"s{i}": v for i, v in enumerate(v for v in model.variables if v.name == _SEED_STATE_NAME)}


class Checkpointer:
    """Saves and restores one run's state in a directory.

    Args:
        directory: where `ckpt-<step>` files and the `checkpoint` state file go.
        keep: how many checkpoints to keep; older ones are deleted on save.
        every_steps: save every this many steps (0 = only when asked).
        step: the step counter, an int64 `tf.Variable`; names the checkpoints.
        restore_dir: where `restore` looks (default `directory`). In a
            multi-worker run every worker saves into its own directory but
            restores from the chief's.
        optional: state saved with the rest but restored only when the
            checkpoint has it (the training recipes' plateau and early-stopping
            state: a run resumed with such a recipe newly switched on starts
            it afresh instead of finding the checkpoint unreadable).
        **trackables: the rest of the state (model, optimizer, input, ...).
    """

    def __init__(self, directory, keep: int, every_steps: int, step: tf.Variable, restore_dir=None, optional=None,
                 **trackables):  # fmt: skip
        self.directory = os.fspath(directory)
        self.restore_dir = os.fspath(restore_dir or directory)
        self.every_steps = every_steps
        self._step = step
        optional = optional or {}
        self.checkpoint = tf.train.Checkpoint(step=step, **trackables, **optional)
        # Restored apart: every object of _required must be in the checkpoint, those of _optional may be missing.
        self._required = tf.train.Checkpoint(step=step, **trackables)
        self._optional = tf.train.Checkpoint(**optional) if optional else None
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, self.directory, max_to_keep=keep, step_counter=step, checkpoint_name="ckpt"
        )
        self.latest: str | None = self.manager.latest_checkpoint
        self._saved_step: int | None = None

    def candidates(self) -> list[str]:
        """Checkpoint prefixes, newest first: those the state file lists and any other on disk.

        Files on disk count too, so a lost or damaged state file does not
        hide checkpoints that are still good.
        """
        found = set(self.manager.checkpoints) if self.restore_dir == self.directory else set()
        for name in tf.io.gfile.listdir(self.restore_dir) if tf.io.gfile.isdir(self.restore_dir) else ():
            m = re.fullmatch(r"(ckpt-\d+)\.index", name)
            if m:
                found.add(os.path.join(self.restore_dir, m.group(1)))
        return sorted(found, key=lambda p: int(p.rsplit("-", 1)[1]), reverse=True)

    def restore(self) -> str | None:
        """Restores the newest readable checkpoint.

        Returns:
            The prefix restored, or None when the directory holds none.

        Raises:
            CheckpointError: checkpoints exist but none can be restored;
                the message names each one and why.
        """
        failures = []
        for path in self.candidates():
            try:
                self._required.restore(path).assert_existing_objects_matched()
                if self._optional is not None:
                    self._optional.restore(path).expect_partial()
            # What a damaged checkpoint raises, verified: a truncated data file
            # IndexError, a flipped byte DataLossError (checksum), a missing
            # file NotFoundError; a model that no longer matches raises
            # ValueError or AssertionError.
            except (tf.errors.OpError, IndexError, ValueError, AssertionError) as e:
                reason = str(e).strip().splitlines()[0][:300]
                failures.append(f"{path}: {type(e).__name__}: {reason}")
                logging.warning("checkpoint %s is unreadable (%s); trying the previous one", path, reason)
                print(f"[tfpipe] warning: checkpoint {path} is unreadable ({reason}); "
                      "falling back to the previous one", flush=True)
                continue
            self.latest = path
            self._saved_step = int(self._step)
            return path
        if failures:
            raise CheckpointError(
                f"no checkpoint in {self.restore_dir} can be restored:\n  " + "\n  ".join(failures)
                + "\nMove the directory away to start over."
            )
        return None

    def due(self, step: int) -> bool:
        """Whether `every_steps` asks for a checkpoint at `step`."""
        return self.every_steps > 0 and step % self.every_steps == 0

    def steps_to_next(self, step: int) -> int:
        """Steps until the next `every_steps` checkpoint (a large number when there is none)."""
        if self.every_steps <= 0:
            return 1 << 62
        return self.every_steps - step % self.every_steps

    def save(self, step: int) -> str:
        """Writes a checkpoint named after `step`, unless one was just written or restored there."""
        if self._saved_step != step:
            self.latest = self.manager.save(checkpoint_number=step)
            self._saved_step = step
        return self.latest
