"""What the always-on input-wait timer costs: training throughput with it on vs off.

    PYTHONPATH=. python benchmarks/measurement_overhead.py [--config configs/digits_mlp.yaml] [--rounds 15]

Builds tfpipe's training loop twice in one process from the same config, model
and input pipeline (tfpipe/data/pipeline.py), once with
`profile.measure_input_wait: true` and once with false, and times loop calls
of `train.steps_per_loop` steps alternately (on, off, on, off, ...). (The
trainer reads the timer once per epoch, so no per-call read is timed.) Alternating in one
process keeps the machine's background load the same for both. Reports
examples/sec per variant (median over rounds, warm-up calls dropped) and the
ratio on/off; the target is >= 0.97. Writes JSON to benchmarks/results/.
"""

import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from absl import app, flags

import results_file  # benchmarks/results_file.py

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("config", ["configs/digits_mlp.yaml", "configs/digits_cnn.yaml"], "Configs to measure.")
flags.DEFINE_multi_string("set", [], "Config overrides applied to every config.")
flags.DEFINE_integer("rounds", 15, "Timed calls per variant (after warm-up).")
flags.DEFINE_integer("calls_per_round", 4, "Loop calls per variant and round.")
flags.DEFINE_string("out", "benchmarks/results/measurement_overhead.json", "Where to write the results.")


def measure(config_path: str, overrides) -> dict:
    import keras  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    import models  # pylint: disable=import-outside-toplevel
    import tfpipe  # pylint: disable=import-outside-toplevel
    from tfpipe import profiling  # pylint: disable=import-outside-toplevel
    from tfpipe.data import pipeline, sources  # pylint: disable=import-outside-toplevel

    cfg = tfpipe.load_config(config_path, overrides=list(overrides))
    batch = cfg.train.batch_size
    n = cfg.train.steps_per_loop
    train_source = sources.load(cfg.data, "train")
    loss_fn = keras.losses.get(cfg.model.loss)
    variants = {}
    for name, enabled in (("on", True), ("off", False)):
        keras.utils.set_random_seed(0)
        ds = pipeline.build(cfg.data, "train", batch, training=True)
        model = models.build(cfg.model.name, ds.element_spec[0].shape[1:], train_source.num_classes, cfg.model.params)
        optimizer = keras.optimizers.get({"class_name": cfg.optimizer.name, "config": {"learning_rate": 1e-3}})
        optimizer.build(model.trainable_variables)
        timer = profiling.InputWaitTimer(enabled)

        def make_loop(model=model, optimizer=optimizer, timer=timer):
            def train_step(features, labels):
                with tf.GradientTape() as tape:
                    loss = tf.nn.compute_average_loss(loss_fn(labels, model(features, training=True)))
                grads = tape.gradient(loss, model.trainable_variables)
                optimizer.apply_gradients(zip(grads, model.trainable_variables))

            # The same shape as tfpipe/trainer.py's train_loop.
            @tf.function
            def train_loop(iterator, num_steps):
                done = timer.token()
                for _ in range(num_steps):
                    train_step(*timer.next(iterator, done))
                    done = timer.step_done(model.trainable_variables)
                timer.flush(done)
                return optimizer.iterations.value  # read back to wait for the call

            return train_loop

        variants[name] = {"loop": make_loop(), "iterator": iter(ds), "timer": timer, "seconds": []}

    def call(v):
        # The trainer reads the timer once per epoch, not per call: nothing here.
        start = time.perf_counter()
        v["loop"](v["iterator"], tf.constant(n, tf.int64)).numpy()
        return time.perf_counter() - start

    for v in variants.values():  # warm-up: tracing, cache fill, autotune
        for _ in range(3):
            call(v)
    for _ in range(FLAGS.rounds):
        for v in variants.values():
            v["seconds"].append(sum(call(v) for _ in range(FLAGS.calls_per_round)))
    result = {"config": config_path, "overrides": list(overrides), "steps_per_loop": n, "batch_size": batch}
    for name, v in variants.items():
        result[f"examples_per_sec_{name}"] = FLAGS.calls_per_round * n * batch / statistics.median(v["seconds"])
    result["ratio_on_over_off"] = result["examples_per_sec_on"] / result["examples_per_sec_off"]
    on = variants["on"]["timer"]
    result["input_wait_seconds_on"] = on.seconds()
    return result


def main(argv):
    del argv
    results = []
    for config in FLAGS.config:
        for extra in ([], ["train.steps_per_loop=1"]):
            r = measure(config, [*FLAGS.set, *extra])
            results.append(r)
            print(
                f"{r['config']:<28} steps_per_loop={r['steps_per_loop']:<3} on {r['examples_per_sec_on']:>9.0f} ex/s   "
                f"off {r['examples_per_sec_off']:>9.0f} ex/s   on/off {r['ratio_on_over_off']:.3f}",
                flush=True,
            )
    results_file.write(Path(FLAGS.out), results)


if __name__ == "__main__":
    app.run(main)
