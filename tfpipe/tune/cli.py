"""`scripts/tune.py MODE --config C --workdir W [--set ...]`: the tuners' command line.

MODE picks a function from `MODES`, a plain dict from mode name to
`run(flags) -> exit status`. A tuner adds itself with one entry here (and
its own flags below, grouped under its name); nothing registers itself by
being imported.

Flags every mode shares: `--config`, `--workdir`, `--set` (repeatable, as
in `scripts/train.py`) and the trial window (`--warmup_seconds`,
`--window_seconds`, `--windows`, `--repeats`, `--trial_timeout`).

Exit statuses: 0 done, 2 a config error (one line, no traceback) or a bad
command line.

Example:

```sh
python scripts/tune.py pipeline --config configs/images_cnn.yaml --workdir runs/tune-images
python scripts/tune.py batch_size --config configs/digits_cnn.yaml --workdir runs/tune-batch
python scripts/tune.py lr --config configs/digits_mlp.yaml --workdir runs/tune-lr
python scripts/tune.py sweep --config configs/digits_mlp.yaml --workdir runs/sweep \
    --space benchmarks/tune_configs/digits_space.yaml --trials 12
```
"""

from __future__ import annotations

import sys

from absl import flags

FLAGS = flags.FLAGS

# ---- every mode
flags.DEFINE_string("config", None, "YAML config to tune.")
flags.DEFINE_string("workdir", None, "Where trials, results and the tuned config go; rerunning resumes.")
flags.DEFINE_multi_string("set", [], "Override a config key before tuning: --set train.epochs=5 (repeatable).")
flags.DEFINE_float("warmup_seconds", 3.0, "Per trial: seconds dropped after the first (compiling) call.")
flags.DEFINE_float("window_seconds", 2.0, "Per trial: length of each timed window.")
flags.DEFINE_integer("windows", 3, "Per trial: timed windows; the run's figure is their median.", lower_bound=1)
flags.DEFINE_integer("repeats", 2, "Runs (processes) of the starting config; their spread is the noise.", lower_bound=1)
flags.DEFINE_integer("num_workers", 2, "Trials under multi_worker_mirrored or parameter_server: worker processes "
                     "on 127.0.0.1 per trial (as scripts/launch_local.py).", lower_bound=1)
flags.DEFINE_integer("num_ps", 1, "Trials under parameter_server: parameter-server processes per trial.", lower_bound=1)
flags.DEFINE_float("trial_timeout", 600.0, "Seconds after which a trial's process is killed and the trial failed.")

# ---- pipeline
flags.DEFINE_bool("allow_result_changes", False,
                  "pipeline: also try changes that alter what is trained on (element order, random draws).")
flags.DEFINE_float("min_gain", 0.03, "pipeline: a change is kept only above max(noise, this) speed-up.")
flags.DEFINE_integer("max_trials", 16, "pipeline: candidate trials at most (the starting runs not counted).")
flags.DEFINE_integer("ram_budget_mb", 0, "pipeline: peak memory a trial may use (0 = half of the available RAM).")
flags.DEFINE_bool("profile", True, "pipeline: diagnose the starting config with tfpipe's profiler report.")


def _pipeline(fl) -> int:
    from tfpipe.tune import pipeline  # pylint: disable=import-outside-toplevel

    return pipeline.main(fl)


# ---- serving
flags.DEFINE_string("model_dir", None, "serving: the export to tune (export/<name> or a version directory).")
flags.DEFINE_float("slo_p99_ms", None, "serving: the p99 latency the request rate must stay under.")
flags.DEFINE_float("serving_probe_seconds", 3.0, "serving: seconds of Poisson arrivals per probed rate.")
flags.DEFINE_float("serving_min_gain", 0.05, "serving: a knob change is kept only above this gain in rate.")


def _serving(fl) -> int:
    from tfpipe.tune import serving  # pylint: disable=import-outside-toplevel

    return serving.main(fl)


# ---- batch_size
flags.DEFINE_integer("min_batch", 8, "batch_size: smallest global batch tried (a power of two).", lower_bound=1)
flags.DEFINE_integer("max_batch", 4096, "batch_size: largest global batch tried (the first out of memory stops first).",
                     lower_bound=1)
flags.DEFINE_float("memory_limit_mb", 0, "batch_size (any mode's trials): a trial past this resident memory is "
                   "killed and counted out of memory (0 = the machine's limit).")
flags.DEFINE_float("knee", 0.9, "batch_size: the knee is the smallest batch reaching this share of the best rate.")
flags.DEFINE_integer("compare", 3, "batch_size: how many of the fastest sizes train at equal time (plus the knee "
                     "and the config's own size).",
                     lower_bound=1)
flags.DEFINE_float("budget_seconds", 10.0, "batch_size: seconds of training each compared size gets.")
flags.DEFINE_enum("lr_scale", "auto", ["auto", "linear", "sqrt", "none"],
                  "batch_size: learning rate for a batch k times the config's: k times, sqrt(k) times, unchanged; "
                  "auto: sqrt for adaptive optimizers (Adam & co.), linear for SGD.")
flags.DEFINE_enum("eval_split", "validation", ["validation", "test"],
                  "batch_size: the split the equal-time runs are judged on (test only for configs without validation).")
flags.DEFINE_float("warmup_fraction", 0.1, "batch_size: linear warm-up of each equal-time run over this share of "
                   "the steps it is expected to make in --budget_seconds (0 = none).")


def _batch_size(fl) -> int:
    from tfpipe.tune import batch_size  # pylint: disable=import-outside-toplevel

    return batch_size.main(fl)


# ---- lr
flags.DEFINE_float("lr_min", 1e-6, "lr: first rate of the range test.")
flags.DEFINE_float("lr_max", 1.0, "lr: last rate of the range test.")
flags.DEFINE_integer("lr_steps", 300, "lr: steps of the range test (one rate each).", lower_bound=5)
flags.DEFINE_float("smoothing", 0.95, "lr: moving-average factor of the smoothed loss.")
flags.DEFINE_float("diverge_factor", 4.0, "lr: stop once the smoothed loss passes this times its best.")


def _lr(fl) -> int:
    from tfpipe.tune import lr  # pylint: disable=import-outside-toplevel

    return lr.main(fl)


# ---- sweep
flags.DEFINE_string("space", None, "sweep: YAML search space {key: {log_uniform|uniform|int: [lo, hi]} | {choice: [...]}}.")
flags.DEFINE_enum("sampler", "tpe", ["grid", "random", "tpe"], "sweep: Optuna sampler.")
flags.DEFINE_integer("trials", 12, "sweep: trials the study should have finished (complete or pruned).", lower_bound=1)
flags.DEFINE_integer("parallel", None, "sweep: trials at once (default cores // 2, at least 1; one per GPU with GPUs).")
flags.DEFINE_string("storage", None, "sweep: Optuna RDB URL shared by several hosts (default sqlite in --workdir).")
flags.DEFINE_string("study", None, "sweep: study name (default: the config file's stem).")
flags.DEFINE_string("objective", "val_accuracy", "sweep: history.json key to optimize (val_loss is minimized).")
flags.DEFINE_integer("grid_points", 3, "sweep: points per continuous range for the grid sampler.", lower_bound=2)
flags.DEFINE_integer("prune_warmup_epochs", 2, "sweep: epochs before a trial may be pruned.", lower_bound=0)
flags.DEFINE_integer("prune_startup_trials", 3, "sweep: trials finished before pruning starts.", lower_bound=0)
flags.DEFINE_integer("seed", 0, "sweep: sampler seed.")


def _sweep(fl) -> int:
    from tfpipe.tune import sweep  # pylint: disable=import-outside-toplevel

    return sweep.main(fl)


# Mode name -> run(flags) -> exit status.
MODES = {"pipeline": _pipeline, "serving": _serving, "batch_size": _batch_size, "lr": _lr, "sweep": _sweep}
# Flags a mode cannot run without (default: --config and --workdir).
REQUIRED = {"serving": ("model_dir", "slo_p99_ms", "workdir"), "sweep": ("config", "workdir", "space")}


def cluster(fl) -> tuple[int, int]:
    """`(workers, ps)` of the localhost cluster a multi-process strategy's trials run as."""
    return fl.num_workers, fl.num_ps


def settings(fl):
    """The `tfpipe.tune.trials.WindowSettings` the shared flags describe."""
    from tfpipe.tune import trials  # pylint: disable=import-outside-toplevel

    return trials.WindowSettings(fl.warmup_seconds, fl.window_seconds, fl.windows, fl.trial_timeout)


def main(argv) -> int:
    """Runs one tuning mode.

    Args:
        argv: `[program, MODE]` once absl has parsed the flags (`app.run`),
            or a full command line (`["tune.py", "pipeline", "--config", ...]`)
            when called directly.

    Returns:
        The exit status.
    """
    if not FLAGS.is_parsed():
        argv = FLAGS(argv)
    modes = ", ".join(sorted(MODES))
    if len(argv) != 2 or argv[1] not in MODES:
        got = " ".join(argv[1:]) or "nothing"
        print(f"error: expected one mode ({modes}). Received: {got}", file=sys.stderr)
        return 2
    for name in REQUIRED.get(argv[1], ("config", "workdir")):
        if not FLAGS[name].value:
            print(f"error: --{name} is required", file=sys.stderr)
            return 2
    import tfpipe  # pylint: disable=import-outside-toplevel

    try:
        if FLAGS.config:  # serving reads the run's own config unless given one
            tfpipe.load_config(FLAGS.config, overrides=FLAGS.set)  # one line and exit 2, before any trial
            # A shipped config's name (`--config digits_mlp`) as its file: trials
            # hash it, copy it and pass it to child processes run elsewhere.
            FLAGS.config = tfpipe.config.resolve_path(FLAGS.config)
        return MODES[argv[1]](FLAGS)
    except tfpipe.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
