"""Input-pipeline throughput without a model: end to end and per stage.

`measure(ds, ...)` pulls batches from a dataset, drops the first `warmup`
(thread start-up, file opening, autotuning) and times the rest.
`stages(cfg, ...)` rebuilds the pipeline cut after each stage
(`tfpipe.data.pipeline.STAGES`) and measures each cut, so the stage where
throughput drops is the bottleneck.

Example:

```python
cfg = tfpipe.load_config("configs/clicks_widedeep.yaml")
result = benchmark.run(cfg, batches=200)
result["end_to_end"]["examples_per_sec"]
```
"""

from __future__ import annotations

import resource
import time

import tensorflow as tf

from tfpipe.data import pipeline


def _examples_in(element) -> int:
    first = tf.nest.flatten(element)[0]
    return int(first.shape[0]) if first.shape.rank else 1


def measure(ds: tf.data.Dataset, batches: int, warmup: int = 10, batched: bool = True) -> dict:
    """Examples per second over `batches` elements after `warmup` ones.

    Args:
        ds: the dataset; it must yield at least `warmup + batches` elements.
        batches: elements timed.
        warmup: elements pulled and discarded before the clock starts.
        batched: count the leading dimension of each element as examples;
            False counts one example per element.
    """
    it = iter(ds)
    for _ in range(warmup):
        next(it)
    examples = 0
    start = time.perf_counter()
    for _ in range(batches):
        element = next(it)
        examples += _examples_in(element) if batched else 1
    seconds = time.perf_counter() - start
    return {
        "examples": examples,
        "seconds": round(seconds, 4),
        "examples_per_sec": round(examples / seconds, 1),
        "elements_per_sec": round(batches / seconds, 1),
    }


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB.

    Reads VmHWM from /proc: Linux carries `ru_maxrss` across exec, so a
    child started by a large parent would report the parent's peak.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def stages(cfg, batches: int, warmup: int = 10) -> list[dict]:
    """Throughput of the training pipeline cut after each stage.

    Stages before `batch` yield single examples; a plain `batch` is appended
    to them for timing, since pulling single elements into Python would cap
    every such stage at Python's own rate (~20k elements/s here). Stages
    before `repeat` are repeated so that a small data set does not run out.
    """
    batch_size = cfg.train.batch_size
    out = []
    for i, stage in enumerate(pipeline.STAGES):
        ds = pipeline.build(cfg.data, "train", batch_size, training=True, stop_after=stage)
        if i < pipeline.STAGES.index("repeat"):
            ds = ds.repeat()
        if i < pipeline.STAGES.index("batch"):
            ds = ds.batch(batch_size)
        out.append({"stage": stage, **measure(ds, batches, warmup)})
    return out


def run(cfg, batches: int = 200, warmup: int = 10, per_stage: bool = True) -> dict:
    """End-to-end and (optionally) per-stage input throughput of `cfg`'s training pipeline."""
    ds = pipeline.build(cfg.data, "train", cfg.train.batch_size, training=True)
    result = {
        "source": cfg.data.source,
        "batch_size": cfg.train.batch_size,
        "batches": batches,
        "warmup": warmup,
        "end_to_end": measure(ds, batches, warmup),
    }
    if per_stage:
        result["stages"] = stages(cfg, batches, warmup)
    result["peak_rss_mb"] = peak_rss_mb()
    return result
