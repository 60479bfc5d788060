"""The perfect-input probe: the same training step fed one cached batch, measured in the run.

The tf.data paper's way to tell how much a pipeline costs: run the same
model and step on one batch cached and repeated, and compare step times.
The profile's waiting share predicts it only as a lower bound,
`1 / (1 - share)`: a step that waited for its batch also starts on idle
thread pools and shares the cores with the input's threads, and both go
away with a perfect input. On sub-millisecond steps that cold start is as
long as the step itself (planted cases, BENCHMARKS.md "Diagnosis": 0.25 ms
hot against 0.45-0.59 ms after a wait), so the estimate said 12x where
the measurement gave 23x.

So, when a profile window was traced, the loop measures it once at the end
of training: calls of the compiled training loop alternate between the
run's iterator and one over a single cached batch (`data.repeat_one_batch`),
then every variable the calls wrote is put back, so the run's results do
not depend on it (tests/test_profiling.py checks the weights). It costs
about a second, or two rounds of two loop calls when calls are longer.

Example:

```python
probe = perfect_input(steps, train_data, perfect_fn, num_steps=40)
probe["run_ms_per_step"] / probe["ms_per_step"]   # the perfect-input speed-up
```
"""

from __future__ import annotations

import time

import tensorflow as tf

# At least this long and this many calls, after one untimed call that fills
# the cache; at most MAX_CALLS (a long call is measured twice, not for a second).
MIN_SECONDS = 1.0
MIN_CALLS = 2
MAX_CALLS = 50


def _state(steps) -> list:
    """Every variable a training call writes: model, optimizer, step, guard and timer."""
    owners = [steps.nonfinite, steps.input_timer]
    extra = [v for owner in owners for v in vars(owner).values() if isinstance(v, tf.Variable)]
    return [*steps.model.variables, *steps.optimizer.variables, steps.step, *extra]


def perfect_input(steps, train_data, dataset_fn, num_steps: int) -> dict:
    """Milliseconds per training step with the run's input and fed one batch repeated, side by side.

    Calls of the run's compiled loop alternate between the run's own iterator
    and one over a single cached batch, timed alike, so that what the loop
    itself costs per call counts on both sides. Afterwards every variable
    the calls wrote is put back; the run's iterator is left further on
    (this runs after the last checkpoint, which holds its position).

    Args:
        steps: the run's `tfpipe.train.steps.Steps`.
        train_data: the run's `tfpipe.train.inputs.TrainInput`; the probe's
            iterator is built the same way (one host pipeline or distributed).
        dataset_fn: the training `dataset_fn` with `data.repeat_one_batch` on.
        num_steps: steps per call, as the run's calls.

    Returns:
        `{"ms_per_step", "run_ms_per_step", "steps", "seconds"}`: the two
        step times and the steps and seconds each side ran.
    """
    state = _state(steps)
    # Host copies (NumPy): no second copy of the weights in accelerator memory.
    saved = [v.numpy() for v in state]

    def timed(iterator) -> float:
        start = time.perf_counter()
        # Read back: on an accelerator a call returns before it has run.
        tf.nest.map_structure(lambda t: t.numpy(), steps.train_call(num_steps, iterator=iterator))
        return time.perf_counter() - start

    try:
        sides = {"run": train_data.iterator, "perfect": train_data.iterator_for(dataset_fn)}
        for iterator in sides.values():  # fills the one-batch cache; nothing to compile
            timed(iterator)
        seconds = {side: 0.0 for side in sides}
        calls = 0
        while calls < MAX_CALLS and (calls < MIN_CALLS or sum(seconds.values()) < MIN_SECONDS):
            for side, iterator in sides.items():
                seconds[side] += timed(iterator)
            calls += 1
    finally:
        for v, value in zip(state, saved):
            v.assign(value)
        steps.train_metrics.reset()
    n = calls * num_steps
    return {
        "ms_per_step": 1000 * seconds["perfect"] / n,
        "run_ms_per_step": 1000 * seconds["run"] / n,
        "steps": n,
        "seconds": sum(seconds.values()),
    }
