"""The perfect-input probe: the same training step fed one cached batch, measured in the run.

The tf.data paper's way to tell how much a pipeline costs: run the same
model and step on one batch cached and repeated, and compare step times.
The profile's waiting share predicts it only as a lower bound,
`1 / (1 - share)`: a step that waited for its batch also starts on idle
thread pools and shares the cores with the input's threads, and both go
away with a perfect input. On sub-millisecond steps that cold start is as
long as the step itself (planted cases, BENCHMARKS.md "Diagnosis": 0.25 ms
hot against 0.45-0.59 ms after a wait), so the estimate said 12x where
the measurement gave 23x (an earlier planted run).

So, when a profile window was traced, the loop measures it once at the end
of training with its own compiled loop: three blocks of back-to-back calls
on an iterator of one cached batch (`data.repeat_one_batch`), then three on
the run's own iterator. Cached first: the run's pipeline sits idle with full
buffers then; interleaved with input blocks, the cached blocks shared the
cores with the pipeline refilling and read 1.1-1.7x slow per step against
separate runs long enough to be steady (2 s of steps each; the earlier
truth, 2 epochs of 100 steps, measured the warm-up after tracing). The
first calls of each block (BLOCK_SECONDS / 2) are not timed: they fill the
cache, or drain what the idle pipeline had buffered. The ratio of the two
step times is the speed-up. Tried and dropped, against the earlier, short
separate runs (BENCHMARKS.md, "Diagnosis"): alternating single calls read
22-33% low (each side's pipeline worked in the background of the other's
calls); subtracting the difference from the run's own timed step read 4.8x where
20x was measured (the loop's Python work competes for the GIL with a
generator source, so it is no fixed cost). The run's own timed step is
reported beside. Calls are cut to about CALL_MS (a 45 ms step runs two per
call). Afterwards every variable the calls wrote is put back, so the
run's results do not depend on it (tests/test_profiling.py checks the
weights). About one to three seconds.

Example:

```python
probe = perfect_input(steps, train_data, perfect_fn, num_steps=40)
probe["run_ms_per_step"] / probe["ms_per_step"]   # the perfect-input speed-up
```
"""

from __future__ import annotations

import math

import tensorflow as tf

from tfpipe.profile import perfect as perfect_lib

# Three rounds of blocks per side (tfpipe/profile/perfect.py: ROUNDS, BLOCK_SECONDS).
# Calls of about this long at most: per-call costs are negligible past it, and
# a long-step model (images_cnn: 45 ms steps) is not held up for seconds.
CALL_MS = 50.0


def _state(steps) -> list:
    """Every variable a training call writes: model, optimizer, step, guard and timer."""
    owners = [steps.nonfinite, steps.input_timer]
    extra = [v for owner in owners for v in vars(owner).values() if isinstance(v, tf.Variable)]
    return [*steps.model.variables, *steps.optimizer.variables, steps.step, *extra]


def perfect_input(steps, train_data, dataset_fn, num_steps: int, run_ms_per_step: float | None = None) -> dict:
    """The run's step time, and what it would be with a perfect input, both in ms.

    Args:
        steps: the run's `tfpipe.train.steps.Steps` (its compiled loop is reused:
            the same step, the same number of steps per call).
        train_data: the run's `tfpipe.train.inputs.TrainInput`; the cached
            side's iterator is built the same way (one host pipeline or distributed).
        dataset_fn: the training `dataset_fn` with `data.repeat_one_batch` on.
        num_steps: steps per call, as the run's calls.
        run_ms_per_step: the run's own timed step time, reported beside.

    Returns:
        `{"ms_per_step", "run_ms_per_step", "timed_run_ms_per_step", "steps", "seconds",
        "blocks_ms_per_step", "speedup_range"}`: ms per step back to back on one
        cached batch and on the run's input, the run's own timed step (as
        given), the steps and seconds timed, each block's ms per step by side,
        and the lowest and highest speed-up any two blocks give.
    """
    state = _state(steps)
    # Host copies (NumPy): no second copy of the weights in accelerator memory.
    saved = [v.numpy() for v in state]

    if run_ms_per_step and run_ms_per_step >= CALL_MS / 2:
        # Long steps: fewer per call (a tensor count: the compiled loop is reused).
        # Only then: the cached side's steps may be far shorter than the run's, and
        # on 0.25 ms steps calls of 10 cost it 40% more per step than calls of 50.
        num_steps = max(2, min(num_steps, math.ceil(CALL_MS / run_ms_per_step)))

    def call(iterator):
        # Read back: on an accelerator a call returns before it has run.
        tf.nest.map_structure(lambda t: t.numpy(), steps.train_call(num_steps, iterator=iterator))

    try:
        # The cached batch first, all its blocks, while the run's pipeline sits
        # idle with full buffers (training ended); then the run's input. Run
        # between input blocks, the cached blocks shared the cores with the
        # pipeline refilling its buffers: 1.1-1.7x slow per step on the
        # input-heavy planted configs against long separate runs. Each block's
        # untimed calls fill the cache, or drain what the idle pipeline
        # buffered meanwhile (time, not one call: a short call left batches in
        # the buffer and the input-bound side read 36-44% fast).
        iterators = {"perfect": train_data.iterator_for(dataset_fn), "input": train_data.iterator}
        out = perfect_lib.time_blocks(call, iterators, num_steps)
    finally:
        for v, value in zip(state, saved):
            v.assign(value)
        steps.train_metrics.reset()
    return {**out, "timed_run_ms_per_step": run_ms_per_step}
