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
of training, in two phases of back-to-back calls of its compiled loop:
first on an iterator of one cached batch (`data.repeat_one_batch`), then on
the run's own iterator. Phases, not alternating calls: alternating, each
side's pipeline worked in the background of the other's calls (the run's
refilled its buffer, making its next call quick, while it took cores from
the cached side), which read 22-33% low on the input-bound planted configs.
The first call of each phase is not timed (it fills the cache, or drains
the buffer the run's pipeline filled meanwhile). The ratio of the two
step times is the speed-up. (Subtracting their difference from the run's
own timed step instead read 4.8x where 20x was measured apart on a Python
generator source: the run's Python work per call competes for the GIL with
the generator, so it is not a fixed cost a perfect input would leave.)
The run's own timed step is reported beside them. Afterwards every
variable the calls wrote is put back, so the run's results do not depend
on it (tests/test_profiling.py checks the weights). About a second.

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
        `{"ms_per_step", "run_ms_per_step", "timed_run_ms_per_step", "steps", "seconds"}`:
        ms per step back to back on one cached batch and on the run's input,
        the run's own timed step (as given), and the steps and seconds timed.
    """
    state = _state(steps)
    # Host copies (NumPy): no second copy of the weights in accelerator memory.
    saved = [v.numpy() for v in state]

    def phase(iterator) -> tuple[float, int]:
        def call():
            start = time.perf_counter()
            # Read back: on an accelerator a call returns before it has run.
            tf.nest.map_structure(lambda t: t.numpy(), steps.train_call(num_steps, iterator=iterator))
            return time.perf_counter() - start

        call()  # fills the one-batch cache, or drains what the idle pipeline buffered
        seconds, calls = 0.0, 0
        while calls < MAX_CALLS and (calls < MIN_CALLS or seconds < MIN_SECONDS / 2):
            seconds += call()
            calls += 1
        return seconds, calls * num_steps

    try:
        perfect_s, perfect_n = phase(train_data.iterator_for(dataset_fn))
        input_s, input_n = phase(train_data.iterator)
    finally:
        for v, value in zip(state, saved):
            v.assign(value)
        steps.train_metrics.reset()
    return {
        "ms_per_step": 1000 * perfect_s / perfect_n,
        "run_ms_per_step": 1000 * input_s / input_n,
        "timed_run_ms_per_step": run_ms_per_step,
        "steps": perfect_n + input_n,
        "seconds": perfect_s + input_s,
    }
