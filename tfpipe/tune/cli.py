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


# Mode name -> run(flags) -> exit status.
MODES = {"pipeline": _pipeline, "serving": _serving}
# Flags a mode cannot run without (default: --config and --workdir).
REQUIRED = {"serving": ("model_dir", "slo_p99_ms", "workdir")}


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
        return MODES[argv[1]](FLAGS)
    except tfpipe.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
