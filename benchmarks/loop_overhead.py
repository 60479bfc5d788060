"""tfpipe's training loop against Keras `model.fit`, side by side.

Same model (the seed MLP), same data, same tf.data pipeline, same batch,
same Adam arithmetic. tfpipe runs `train.steps_per_loop` steps per
tf.function call; `fit` runs `steps_per_execution` steps per call. tfpipe's
defaults differ from `fit`'s in three ways, and variants take each apart:
its own loop, the config's thread settings, and Adam's update as one fused
TensorFlow kernel per variable (tfpipe/train/optimizers.py). Each
variant runs in its own process (fresh graph, fresh thread pools), the
variants take turns over several rounds so that a load spike on this shared
machine hits all of them, and the median of the rounds is reported.

    python benchmarks/loop_overhead.py [--rounds 3] [--epochs 15]

Writes benchmarks/results/loop_overhead.json and prints a table with ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import results_file  # benchmarks/results_file.py

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "digits_mlp.yaml"
VARIANTS = {
    "tfpipe_spl1": ("tfpipe", 1),
    "tfpipe_spl50": ("tfpipe", 50),
    # Without the per-step checks `fit` does not do either: the non-finite
    # guard and the input-wait timer. Shows what those cost.
    "tfpipe_spl50_bare": ("tfpipe_bare", 50),
    # With TensorFlow's default threads instead of the config's: what the
    # config's runtime.*_op_threads gain.
    "tfpipe_spl50_tfthreads": ("tfpipe_tfthreads", 50),
    # With Keras's own Adam update instead of TensorFlow's fused kernel
    # (optimizer.fused: false): what the fused update gains.
    "tfpipe_spl50_kerasadam": ("tfpipe_kerasadam", 50),
    "fit_spe1": ("fit", 1),
    "fit_spe50": ("fit", 50),
    # `fit` with the thread settings of tfpipe's config (runtime.*_op_threads):
    # separates what the loop gains from what the config's threads gain.
    "fit_spe1_threads": ("fit_threads", 1),
    "fit_spe50_threads": ("fit_threads", 50),
    # `fit` with the config's threads and tfpipe's fused Adam as well: only
    # the loop differs from tfpipe_spl50.
    "fit_spe50_threads_fused": ("fit_threads_fused", 50),
}


def run_tfpipe(steps_per_call: int, epochs: int, kind: str = "tfpipe") -> float:
    import tfpipe  # pylint: disable=import-outside-toplevel

    overrides = [f"train.epochs={epochs}", f"train.steps_per_loop={steps_per_call}"]
    if kind == "tfpipe_bare":
        overrides += ["train.on_nonfinite=off", "profile.measure_input_wait=false"]
    if kind == "tfpipe_tfthreads":
        overrides += ["runtime.inter_op_threads=0", "runtime.intra_op_threads=0"]
    if kind == "tfpipe_kerasadam":
        overrides += ["optimizer.fused=false"]
    cfg = tfpipe.load_config(CONFIG, overrides=overrides)
    with tempfile.TemporaryDirectory() as workdir:
        # examples_per_sec counts only the loop calls, without the first (tracing) call.
        return tfpipe.train(cfg, workdir)["examples_per_sec"]


def run_fit(steps_per_call: int, epochs: int, threads: bool = False, fused: bool = False) -> float:
    import keras  # pylint: disable=import-outside-toplevel
    import math  # pylint: disable=import-outside-toplevel

    from tfpipe import models  # pylint: disable=import-outside-toplevel
    import tfpipe  # pylint: disable=import-outside-toplevel
    from tfpipe.distribute import strategies  # pylint: disable=import-outside-toplevel
    from tfpipe.train import optimizers  # pylint: disable=import-outside-toplevel
    from tfpipe.data import pipeline, sources  # pylint: disable=import-outside-toplevel

    cfg = tfpipe.load_config(CONFIG)
    if threads:  # the config's inter/intra-op threads, set before TensorFlow starts
        strategies.configure_devices(cfg.runtime)
    keras.utils.set_random_seed(cfg.runtime.seed)
    batch = cfg.train.batch_size
    train = sources.load(cfg.data, "train")
    steps = math.ceil(train.num_examples / batch)
    dataset = pipeline.build(cfg.data, "train", batch, training=True)
    model = models.build(cfg.model.name, dataset.element_spec[0].shape[1:], train.num_classes, cfg.model.params)
    model.compile(
        # Keras's Adam, as a `fit` user writes it; `fused`: tfpipe's fused-kernel Adam.
        optimizer=(optimizers.FusedAdam if fused else keras.optimizers.Adam)(cfg.optimizer.learning_rate),
        loss=cfg.model.loss,
        metrics=["accuracy"],
        steps_per_execution=steps_per_call,
    )

    class Timer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self.start)

    timer = Timer()
    model.fit(dataset, epochs=epochs, steps_per_epoch=steps, verbose=0, callbacks=[timer])
    # Epoch 1 includes tracing, as tfpipe's first call does: both drop it.
    return steps * (epochs - 1) * batch / sum(timer.seconds[1:])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--variant", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.variant:  # child process: one measurement, printed as JSON
        kind, k = VARIANTS[args.variant]
        if kind.startswith("fit"):
            eps = run_fit(k, args.epochs, threads="threads" in kind, fused="fused" in kind)
        else:
            eps = run_tfpipe(k, args.epochs, kind)
        results_file.hand_back({"examples_per_sec": eps})
        return

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    samples = {name: [] for name in VARIANTS}
    for r in range(args.rounds):
        order = list(VARIANTS) if r % 2 == 0 else list(reversed(VARIANTS))
        for name in order:
            result = results_file.from_child(
                [sys.executable, __file__, "--variant", name, "--epochs", str(args.epochs)], name, env=env
            )
            samples[name].append(result["examples_per_sec"])
            print(f"round {r + 1}: {name:24s} {samples[name][-1]:10.0f} examples/sec", flush=True)

    med = {name: statistics.median(v) for name, v in samples.items()}
    ratios = {
        "tfpipe_spl1 / fit_spe1 (target >= 1.2)": med["tfpipe_spl1"] / med["fit_spe1"],
        "tfpipe_spl50 / fit_spe50 (target >= 1.2)": med["tfpipe_spl50"] / med["fit_spe50"],
        "tfpipe_spl50 / fit_spe1 (default vs default, target >= 4)": med["tfpipe_spl50"] / med["fit_spe1"],
        "tfpipe_spl50_kerasadam / fit_spe1 (default vs default, Keras's Adam update)": med["tfpipe_spl50_kerasadam"] / med["fit_spe1"],
        "tfpipe_spl50 / tfpipe_spl50_kerasadam (the fused Adam update)": med["tfpipe_spl50"] / med["tfpipe_spl50_kerasadam"],
        "tfpipe_spl50 / fit_spe50_threads_fused (same threads, same fused Adam)": med["tfpipe_spl50"] / med["fit_spe50_threads_fused"],
        "tfpipe_spl50_bare / fit_spe50 (no guard, no timer)": med["tfpipe_spl50_bare"] / med["fit_spe50"],
        "tfpipe_spl50 / tfpipe_spl50_tfthreads (the config's threads)": med["tfpipe_spl50"] / med["tfpipe_spl50_tfthreads"],
        "tfpipe_spl1 / fit_spe1_threads (same threads)": med["tfpipe_spl1"] / med["fit_spe1_threads"],
        "tfpipe_spl50 / fit_spe50_threads (same threads)": med["tfpipe_spl50"] / med["fit_spe50_threads"],
    }
    print("\nmedian examples/sec over", args.rounds, "rounds:")
    for name, value in med.items():
        print(f"  {name:24s} {value:10.0f}")
    for name, value in ratios.items():
        print(f"  {name}: {value:.2f}x")
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "command": "python benchmarks/loop_overhead.py " + " ".join(sys.argv[1:]),
        "epochs": args.epochs,
        "samples": samples,
        "median_examples_per_sec": med,
        "ratios": ratios,
    }
    out = ROOT / "benchmarks" / "results" / "loop_overhead.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
