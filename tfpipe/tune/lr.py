"""`scripts/tune.py lr`: the learning-rate range test, in a child process.

One short real training run (`tfpipe.tune.window`, kind `lr_range`): from
the config's initial weights, one step at each rate, the rates growing
exponentially from `--lr_min` to `--lr_max` over `--lr_steps` steps, each
step's loss recorded and smoothed (exponential moving average, bias
corrected). The run stops when the smoothed loss passes `--diverge_factor`
times its best or goes non-finite.

The suggestion is the rate at the smoothed loss's minimum divided by 10:
the minimum sits where the rate has just become too large to keep
improving, and a tenth of it is still on the falling slope. (The rate of
steepest descent is reported beside it; on noisy curves it jumps around,
which is why it is not the suggestion.) The schedule suggestion is a cosine
decay from the suggested rate with a linear warm-up of about 5% of the
epochs (`optimizer.schedule` keys): the range test's rates were all
reached from the initial weights, and the warm-up keeps the first steps
below them.

Under `runtime.lr_scaling: linear` every probed rate is multiplied by the
replicas as training would; the rates reported are `optimizer.learning_rate`
values (before that factor), so the suggestion goes into the config as is.

Writes `lr.json`, `lr.png` and `tuned.yaml` (the suggested rate and schedule).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from tfpipe import config as config_lib
from tfpipe.tune import trials as trials_lib


def _print(msg: str) -> None:
    print(msg, flush=True)


def suggest(points: list[dict]) -> dict:
    """From the range test's points: `min_loss_lr`, `suggested` (a tenth of it), `steepest_lr`.

    Args:
        points: `{"lr", "loss", "smoothed"}` per step, rates increasing.
    """
    if len(points) < 5:
        raise ValueError(f"lr: too few range-test steps to suggest a rate ({len(points)}); raise --lr_steps")
    # The first steps' smoothed values lean on few losses: skip 5%.
    skip = max(1, len(points) // 20)
    usable = points[skip:]
    low = min(usable, key=lambda p: p["smoothed"])
    slopes = []
    for a, b in zip(usable, usable[1:]):
        if b["lr"] <= low["lr"]:
            slopes.append(((b["smoothed"] - a["smoothed"]) / (math.log(b["lr"]) - math.log(a["lr"])), a["lr"]))
    steepest = min(slopes)[1] if slopes else low["lr"]
    return {"min_loss_lr": low["lr"], "min_smoothed_loss": low["smoothed"], "suggested": low["lr"] / 10,
            "steepest_lr": steepest}


def schedule_suggestion(cfg, rate: float) -> dict:
    """Cosine decay from `rate` with a warm-up of about 5% of the epochs (at least 1)."""
    warmup = max(1, round(0.05 * cfg.train.epochs))
    return {"optimizer.learning_rate": float(f"{rate:.3g}"), "optimizer.schedule.name": "cosine",
            "optimizer.schedule.unit": "epochs", "optimizer.schedule.warmup": warmup,
            "optimizer.schedule.alpha": 0.0}


def tune(config, workdir, overrides=(), settings=None, log=_print, *, lr_min=1e-6, lr_max=1.0, lr_steps=300,
         smoothing=0.95, diverge_factor=4.0, cluster=(2, 1)) -> dict:  # fmt: skip
    """Runs the range test on `config` and suggests a learning rate and a schedule.

    Args:
        config: YAML config path.
        workdir: outputs and the trial store (`trials.json`); reusing it resumes.
        overrides: `--set` strings applied first.
        settings: `tfpipe.tune.trials.WindowSettings` (its timeout applies).
        log: progress lines.
        lr_min, lr_max, lr_steps: the exponential sweep.
        smoothing: the moving average's factor (0.95: about 20 steps).
        diverge_factor: stop when the smoothed loss passes this times its best.
        cluster: `(workers, ps)` processes of the test under multi_worker_mirrored
            or parameter_server (`tfpipe.tune.trials.Runner`).

    Returns:
        The `lr.json` dict: `points`, `stopped`, `suggested`, `min_loss_lr`,
        `steepest_lr`, `schedule` (`optimizer.*` keys), `replicas_factor`.

    Example:

    ```python
    from tfpipe.tune import lr
    result = lr.tune("configs/digits_mlp.yaml", "runs/tune-lr")
    result["suggested"], result["schedule"]
    ```
    """
    if not 0 < lr_min < lr_max:
        raise config_lib.ConfigError(f"lr: expected 0 < --lr_min < --lr_max. Received: {lr_min}, {lr_max}")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = config_lib.load(config, list(overrides))
    store = trials_lib.Store(workdir / "trials.json")
    runner = trials_lib.Runner(config, workdir, store, overrides, settings, log=lambda m: log(f"[tune] {m}"),
                               cluster=cluster)
    # One rate per step: the schedule must not move it too.
    probe = ["optimizer.schedule.name=constant", "optimizer.schedule.warmup=0"]
    rec = runner.run(probe, kind="lr_range", label="range test",
                     extra={"lr_min": lr_min, "lr_max": lr_max, "lr_steps": lr_steps, "smoothing": smoothing,
                            "diverge_factor": diverge_factor})  # fmt: skip
    if rec["status"] != "ok":
        raise config_lib.ConfigError(f"lr: the range test {rec['status']}: {rec['error']}")
    r = rec["result"]
    result = {"config": str(config), "overrides": list(overrides), "lr_min": lr_min, "lr_max": lr_max,
              "lr_steps": lr_steps, "smoothing": smoothing, "stopped": r["stopped"], "points": r["points"],
              "replicas_factor": r["lr_scaling_factor"], "current": cfg.optimizer.learning_rate,
              **suggest(r["points"])}  # fmt: skip
    result["schedule"] = schedule_suggestion(cfg, result["suggested"])
    _write(result, workdir, log)
    return result


def chart(result: dict, path) -> None:
    """`lr.png`: loss and smoothed loss against the rate (log scale), the suggestion marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=import-outside-toplevel
    from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel

    fig = Figure(figsize=(7, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    pts = result["points"]
    ax.plot([p["lr"] for p in pts], [p["loss"] for p in pts], color="#cccccc", linewidth=0.8, label="step loss")
    ax.plot([p["lr"] for p in pts], [p["smoothed"] for p in pts], color="#1f4e9c", label="smoothed")
    ax.set_xscale("log")
    ax.axvline(result["min_loss_lr"], color="#999999", linestyle=":", label=f"minimum {result['min_loss_lr']:.2g}")
    ax.axvline(result["suggested"], color="#2a9d4a", linestyle="--", label=f"suggested {result['suggested']:.2g}")
    ax.axvline(result["current"], color="#c0392b", linestyle="-.", linewidth=0.8,
               label=f"config {result['current']:.2g}")
    top = 3 * min(p["smoothed"] for p in pts)
    ax.set_ylim(min(p["loss"] for p in pts) * 0.9, max(top, pts[0]["smoothed"] * 1.2))
    ax.set_xlabel("learning rate (optimizer.learning_rate)")
    ax.set_ylabel("training loss")
    ax.set_title(f"{Path(result['config']).name}: range test ({result['stopped']})", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _write(result: dict, workdir: Path, log) -> None:
    trials_lib.write_report(workdir, "lr", result, chart, log)
    tuned = config_lib.load(result["config"], result["overrides"] + [
        f"{k}={json.dumps(v)}" for k, v in result["schedule"].items()])
    config_lib.dump(tuned, workdir / "tuned.yaml")
    log(f"[tune] smoothed loss lowest at rate {result['min_loss_lr']:.3g}; steepest descent at "
        f"{result['steepest_lr']:.3g}; {result['stopped']}")
    log(f"[tune] suggested optimizer.learning_rate {result['suggested']:.3g} (config: {result['current']:.3g})")
    log("[tune] schedule suggestion: " + " ".join(f"--set {k}={json.dumps(v)}" for k, v in result["schedule"].items()))
    log(f"[tune] wrote {workdir / 'lr.json'}, {workdir / 'lr.png'}, {workdir / 'tuned.yaml'}")


def main(fl) -> int:
    """`scripts/tune.py lr`: see `tfpipe.tune.cli`."""
    from tfpipe.tune import cli  # pylint: disable=import-outside-toplevel

    tune(fl.config, fl.workdir, fl.set, cli.settings(fl), cluster=cli.cluster(fl), lr_min=fl.lr_min, lr_max=fl.lr_max,
         lr_steps=fl.lr_steps, smoothing=fl.smoothing, diverge_factor=fl.diverge_factor)
    return 0
