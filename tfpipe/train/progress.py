"""The training loop's console output: one line per epoch, honest about slow calls.

```
[tfpipe] epoch 6/50  40/40 ━━━━━━━━━━ loss 1.5435 accuracy 0.4672 val_loss 1.2194 val_accuracy 0.7167 - 0.9 ms/step (profiler 22.1 s, not counted)
```

- On a terminal or in a notebook the line redraws in place while the epoch
  runs, and only every k-th epoch's line stays (k chosen so that at most
  `KEEP_LINES` stay, plus the first, the last and any epoch with a note),
  so a 50-epoch run fits on one screen. Written to a file or a pipe (logs,
  tests), every epoch gets its line and nothing is redrawn.
- ms/step counts only the timed loop calls: the first call of the process
  (it compiles the loop) and the profiler's calls (a compile of the unrolled
  loop, then the traced window) are left out, as they are from
  `examples_per_sec`. While such a call runs, the line says what it waits
  for, so a 20-second compile does not read as `542ms/step` or a hang.

Why not `keras.utils.Progbar`: it computes ms/step over everything since
the bar started, including those calls, cannot show a note while a call
blocks, and prints one bar per epoch.
"""

from __future__ import annotations

import math
import os
import sys

KEEP_LINES = 20
_BAR = 10


def _dynamic(stream) -> bool:
    from tfpipe.train import custom  # pylint: disable=import-outside-toplevel

    if custom.in_notebook():
        return True
    return hasattr(stream, "isatty") and stream.isatty() and os.environ.get("TERM") != "dumb"


def _columns(stream) -> int:
    """The terminal's width when `stream` is one (0 in a notebook: its output does not wrap)."""
    if not (hasattr(stream, "isatty") and stream.isatty()):
        return 0
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError):
        return 0


class EpochLine:
    """The per-epoch line of one run.

    Args:
        epochs: epochs in the run (`train.epochs`).
        steps_per_epoch: steps in one epoch.
        stream: where to write (stdout).
    """

    def __init__(self, epochs: int, steps_per_epoch: int, stream=None):
        self.stream = stream or sys.stdout
        self.epochs, self.steps_per_epoch = epochs, steps_per_epoch
        self.dynamic = _dynamic(self.stream)
        self._columns = _columns(self.stream) if self.dynamic else 0
        self.every = max(1, math.ceil(epochs / KEEP_LINES)) if self.dynamic else 1
        self._live = 0  # length of the redrawable text on screen; 0 = none
        self._epoch = 0
        self._notes: list[str] = []

    # ------------------------------------------------------------ drawing
    def _text(self, done: int, values: dict, ms_per_step, note: str = "") -> str:
        filled = int(_BAR * done / self.steps_per_epoch) if self.steps_per_epoch else _BAR
        parts = [f"[tfpipe] epoch {self._epoch + 1}/{self.epochs}", f"{done}/{self.steps_per_epoch}",
                 "━" * filled + "─" * (_BAR - filled)]
        parts += [f"{k} {v:.3g}" if k == "lr" else f"{k} {v:.4f}" for k, v in values.items() if v is not None]
        text = " ".join(parts)
        if ms_per_step is not None:
            text += f" - {ms_per_step:.2f} ms/step"
        return text + (f" ({note})" if note else "")

    def _draw(self, text: str) -> None:
        # On a terminal a line longer than the window wraps, and "\r" then
        # redraws only its last row: each redraw would leave a row behind.
        if self._columns and len(text) >= self._columns:
            text = text[: self._columns - 2] + "…"
        pad = " " * max(0, self._live - len(text))
        self.stream.write("\r" + text + pad)
        self.stream.flush()
        self._live = len(text)

    def _newline(self) -> None:
        if self._live:
            self.stream.write("\n")
            self.stream.flush()
            self._live = 0

    # ------------------------------------------------------------ the loop's calls
    def start(self, epoch: int) -> None:
        """Epoch `epoch` (0-based) begins."""
        self._epoch, self._notes = epoch, []

    def update(self, done: int, values: dict, ms_per_step=None) -> None:
        """Redraws the live line (terminal and notebook only)."""
        if self.dynamic:
            self._draw(self._text(done, values, ms_per_step))

    def waiting(self, done: int, values: dict, why: str) -> None:
        """Says on the live line what the next, slow call waits for (terminal and notebook only)."""
        if self.dynamic:
            self._draw(self._text(done, values, None, f"{why} ..."))

    def note(self, text: str) -> None:
        """Adds a note to this epoch's final line (the line is then kept)."""
        self._notes.append(text)

    def print(self, message: str) -> None:
        """Prints a line of its own: the live line is wiped first and redrawn at the next update."""
        if self._live:
            self.stream.write("\r" + " " * self._live + "\r")
            self._live = 0
        print(message, file=self.stream, flush=True)

    def end(self, values: dict, ms_per_step) -> None:
        """The epoch's final line: kept, or (terminal/notebook) left to be overwritten."""
        text = self._text(self.steps_per_epoch, values, ms_per_step, "; ".join(self._notes))
        last = self._epoch + 1 == self.epochs
        keep = not self.dynamic or last or self._epoch == 0 or self._notes or (self._epoch + 1) % self.every == 0
        if self.dynamic:
            self._draw(text)
            if keep:
                self._newline()
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        """Ends a live line left on screen (a run stopped mid-epoch)."""
        self._newline()
