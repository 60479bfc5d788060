"""What the always-on input-wait timer costs: training throughput with it on vs off.

    python benchmarks/measurement_overhead.py [--config configs/digits_mlp.yaml] [--rounds 9]

Trains through tfpipe's real trainer (`tfpipe.train`: its loop, the
non-finite guard, the fused Adam update, strategy.run), once with
`profile.measure_input_wait: true` and once with false, everything else the
config's defaults, and alternates the two in one process (on, off, off, on,
...) so that the machine's background load falls on both alike. Each run's
figure is the trainer's own `examples_per_sec` (loop calls only, the first,
tracing call excluded): what a user's metrics.json reports. Each config is
measured at its `train.steps_per_loop` and at 1. Reports the median
examples/sec per variant and the ratio on/off; the target is >= 0.97.
Writes JSON to benchmarks/results/.
"""

import contextlib
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from absl import app, flags

import results_file  # benchmarks/results_file.py

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("config", ["configs/digits_mlp.yaml", "configs/digits_cnn.yaml"], "Configs to measure.")
flags.DEFINE_multi_string("set", [], "Config overrides applied to every config.")
flags.DEFINE_integer("rounds", 9, "Runs per variant (each a whole tfpipe.train).")
flags.DEFINE_integer("examples", 60_000, "Training examples per run (rounded up to whole epochs).")
flags.DEFINE_bool("child", False, "Internal: measure the one --config in this process and print JSON.")
flags.DEFINE_string("out", "benchmarks/results/measurement_overhead.json", "Where to write the results.")


def _train_quietly(cfg) -> tuple[float, int]:
    """One whole run: (examples/sec, steps)."""
    import tfpipe  # pylint: disable=import-outside-toplevel

    # The progress bar would flood the table; the figure comes back in metrics.
    with tempfile.TemporaryDirectory() as workdir, open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        metrics = tfpipe.train(cfg, workdir)
    return metrics["examples_per_sec"], metrics["steps"]


def measure(config_path: str, overrides) -> dict:
    import tfpipe  # pylint: disable=import-outside-toplevel

    # Warm-up (the first run in a process pays one-off costs) and the length
    # of an epoch. It is the first thing here to start TensorFlow, so the
    # config's thread settings take effect.
    warm = tfpipe.load_config(config_path, overrides=[*overrides, "train.epochs=1"])
    _, steps_per_epoch = _train_quietly(warm)
    epochs = max(1, -(-FLAGS.examples // (steps_per_epoch * warm.train.batch_size)))
    # One checkpoint, at the end. (Saves and the per-epoch validation run
    # between loop calls and are not in examples_per_sec; this only
    # shortens the benchmark.)
    common = [*overrides, f"train.epochs={epochs}", f"checkpoint.every_epochs={epochs}"]
    cfgs = {
        name: tfpipe.load_config(config_path, overrides=[*common, f"profile.measure_input_wait={on}"])
        for name, on in (("on", "true"), ("off", "false"))
    }
    samples = {"on": [], "off": []}
    for r in range(FLAGS.rounds):
        for name in ("on", "off") if r % 2 == 0 else ("off", "on"):
            samples[name].append(_train_quietly(cfgs[name])[0])
    result = {
        "config": config_path,
        "overrides": common,
        "steps_per_loop": warm.train.steps_per_loop,
        "steps_per_epoch": steps_per_epoch,
        "batch_size": warm.train.batch_size,
        "samples": samples,
    }
    for name, values in samples.items():
        result[f"examples_per_sec_{name}"] = statistics.median(values)
    result["ratio_on_over_off"] = result["examples_per_sec_on"] / result["examples_per_sec_off"]
    return result


def main(argv):
    del argv
    if FLAGS.child:  # one config in this process: its thread settings apply
        results_file.hand_back(measure(FLAGS.config[0], FLAGS.set))
        return
    results = []
    for config in FLAGS.config:
        for extra in ([], ["train.steps_per_loop=1"]):
            sets = [f"--set={s}" for s in [*FLAGS.set, *extra]]
            r = results_file.from_child(
                [sys.executable, __file__, "--child", f"--config={config}", *sets,
                 f"--rounds={FLAGS.rounds}", f"--examples={FLAGS.examples}"],
                f"{config} {extra}", cwd=ROOT,
            )
            results.append(r)
            print(
                f"{r['config']:<28} steps_per_loop={r['steps_per_loop']:<3} on {r['examples_per_sec_on']:>9.0f} ex/s   "
                f"off {r['examples_per_sec_off']:>9.0f} ex/s   on/off {r['ratio_on_over_off']:.3f}",
                flush=True,
            )
    results_file.write(ROOT / FLAGS.out, results)


if __name__ == "__main__":
    app.run(main)
