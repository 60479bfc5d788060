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
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def stages(cfg, batches: int, warmup: int = 10) -> list[dict]:
    """Throughput of the training pipeline cut after each stage.

    Stages before `batch` yield single examples, so they are timed over
    `batches * batch_size` elements; stages before `repeat` are repeated so
    that a small data set does not run out.
    """
    batch_size = cfg.train.batch_size
    out = []
    after_batch = False
    for stage in pipeline.STAGES:
        after_batch = after_batch or stage == "batch"
        ds = pipeline.build(cfg.data, "train", batch_size, training=True, stop_after=stage)
        if pipeline.STAGES.index(stage) < pipeline.STAGES.index("repeat"):
            ds = ds.repeat()
        if after_batch:
            r = measure(ds, batches, warmup)
        else:
            r = measure(ds, batches * batch_size, warmup * batch_size, batched=False)
        out.append({"stage": stage, **r})
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
