"""Timing one compiled loop on one cached batch against its real input, in blocks.

The core of the perfect-input probe (tfpipe/train/probe.py for tfpipe's own
loop, `planted.diagnose` for the plain planted programs): the same loop
function called back to back on two iterators, the cached batch first (all
its blocks, while the real pipeline sits idle with full buffers), then the
real input. Each block runs untimed calls for `block_seconds / 2` (they fill
the cache, or drain what the idle pipeline buffered meanwhile), then timed
calls for at least `block_seconds`. Why this order and these lengths is in
tfpipe/train/probe.py.

Example:

```python
out = time_blocks(lambda it: loop(it, 40), {"perfect": cached_it, "input": run_it}, num_steps=40)
out["run_ms_per_step"] / out["ms_per_step"]   # the perfect-input speed-up
```
"""

from __future__ import annotations

import time
from typing import Callable

# Three rounds of blocks per side, each timed for at least BLOCK_SECONDS.
ROUNDS = 3
BLOCK_SECONDS = 0.2


def time_blocks(call: Callable, iterators: dict, num_steps: int, rounds: int = ROUNDS,
                block_seconds: float = BLOCK_SECONDS) -> dict:
    """ms per step on `iterators["perfect"]` and on `iterators["input"]`, each block's, and the range.

    Args:
        call: runs one compiled call of `num_steps` steps on the iterator it
            is given and returns when the call has finished (read a result back).
        iterators: `{"perfect": ..., "input": ...}`, timed in that order.
        num_steps: steps per call.

    Returns:
        `{"ms_per_step", "run_ms_per_step", "steps", "seconds",
        "blocks_ms_per_step", "speedup_range"}`: ms per step over all timed
        calls of each side, steps and seconds timed, each block's ms per step
        by side, and the lowest and highest speed-up any two blocks give.
    """
    seconds = {"input": 0.0, "perfect": 0.0}
    calls = {"input": 0, "perfect": 0}
    blocks = {"input": [], "perfect": []}

    def timed(iterator) -> float:
        start = time.perf_counter()
        call(iterator)
        return time.perf_counter() - start

    for side in ("perfect", "input"):
        for _ in range(rounds):
            warm = 0.0
            while warm < block_seconds / 2:
                warm += timed(iterators[side])
            block, n = 0.0, 0
            while block < block_seconds:
                block += timed(iterators[side])
                n += 1
            calls[side] += n
            seconds[side] += block
            blocks[side].append(1000 * block / (n * num_steps))
    perfect_n, input_n = calls["perfect"] * num_steps, calls["input"] * num_steps
    return {
        "ms_per_step": 1000 * seconds["perfect"] / perfect_n,
        "run_ms_per_step": 1000 * seconds["input"] / input_n,
        "steps": perfect_n + input_n,
        "seconds": seconds["perfect"] + seconds["input"],
        "blocks_ms_per_step": blocks,
        # The least gain any pair of blocks shows (fastest input block against
        # the slowest cached one) and the most. On sub-millisecond steps blocks
        # vary by 10% and more; a range that reaches 1.0 measured no gain.
        "speedup_range": [min(blocks["input"]) / max(blocks["perfect"]), max(blocks["input"]) / min(blocks["perfect"])],
    }
