"""`scripts/tune.py sweep`: a hyperparameter search over any config keys, with Optuna.

The search space is a small YAML file, one entry per config key:

```yaml
optimizer.learning_rate: {log_uniform: [1.0e-4, 1.0e-2]}
model.params.dropout: {uniform: [0.0, 0.5]}
train.batch_size: {choice: [32, 64, 128]}
model.name: {choice: [mlp, cnn]}      # model selection is just a choice
```

`log_uniform`/`uniform` draw floats, `int` integers (both ends included),
`choice` one of the listed values (a value may be a mapping, e.g. a whole
`model.params`). When `model.name` is searched and `model.params` is not,
a trial whose model differs from the config's gets `model.params: {}` (its
builder's defaults: another model's params would not fit).

Each trial is a real `tfpipe train` run in its own process (so a crash or
an out-of-memory kill ends one trial), in `W/trials/<number>/`, with
`checkpoint.every_epochs: 1` so its `history.json` grows by one entry per
epoch. The parent reads it as it grows and reports each epoch's validation
metric (`--objective`, default `val_accuracy`; `val_loss` and other `loss`
keys are minimized) to Optuna; the median pruner (`--prune_startup_trials`,
`--prune_warmup_epochs`) stops a trial whose best value so far is worse
than the median of earlier trials at the same epoch, by SIGTERM (tfpipe
checkpoints and exits). A trial's value is its best epoch's.

The study lives in `W/sweep.db` (SQLite) unless `--storage` names an RDB
URL (e.g. `postgresql://...`): several hosts running the same command
against one URL share one study, which is how a sweep scales past one
machine. Each session stops once the study holds `--trials` finished
trials, whoever ran them; trials then still running anywhere finish, so a
shared study can end up to the hosts' `--parallel` slots, less one, past
it. Each host keeps its trials' directories in its own workdir and writes
the outputs from the whole study. `--seed` makes a `--parallel 1` session's
draws repeatable; with more, Optuna reseeds the sampler in each thread. `--parallel` trials run at once (default cores // 2, at least 1).
Rerunning resumes: finished trials (complete, pruned or failed) are kept and
only the missing ones run; a trial left running by a killed sweep on this
host is marked failed and its number re-run as a new trial.

Outputs: `sweep.json` (every trial: params, value, state, epochs),
`sweep.png` (objective per trial and the curves, pruned ones marked),
`tuned.yaml` (the config with the best trial's values) and TensorBoard's
HParams dashboard in `W/hparams/` (`tensorboard --logdir W/hparams`).
"""

from __future__ import annotations

import json
import math
import os
import signal
import queue
import socket
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import yaml

from tfpipe import config as config_lib
from tfpipe.tune import trials as trials_lib
from tfpipe.tune import window

KINDS = ("log_uniform", "uniform", "int", "choice")


def _print(msg: str) -> None:
    print(msg, flush=True)


# ---------------------------------------------------------------- the space


def load_space(path) -> dict:
    """Reads and checks a search-space YAML: `{key: {kind: args}}`; raises ConfigError naming the entry."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise config_lib.ConfigError(f"{path}: cannot read the search space ({e})") from None
    if not isinstance(raw, dict) or not raw:
        raise config_lib.ConfigError(f"{path}: expected a mapping of config keys to {{{'|'.join(KINDS)}: ...}}")
    space = {}
    for key, spec in raw.items():
        where = f"{path}: {key}"
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in KINDS:
            raise config_lib.ConfigError(f"{where}: expected one of {{log_uniform|uniform|int: [lo, hi]}} or "
                                         f"{{choice: [...]}}. Received: {spec!r}")
        kind, args = next(iter(spec.items()))
        if kind == "choice":
            if not isinstance(args, list) or not args:
                raise config_lib.ConfigError(f"{where}: choice: expected a non-empty list. Received: {args!r}")
        else:
            ok = (isinstance(args, list) and len(args) == 2 and all(isinstance(a, (int, float)) for a in args)
                  and args[0] < args[1] and (kind != "log_uniform" or args[0] > 0)
                  and (kind != "int" or all(isinstance(a, int) for a in args)))
            if not ok:
                need = {"int": "two integers lo < hi", "log_uniform": "two numbers 0 < lo < hi"}.get(kind, "two numbers lo < hi")
                raise config_lib.ConfigError(f"{where}: {kind}: expected [lo, hi], {need}. Received: {args!r}")
        space[key] = (kind, args)
    return space


def check_space(config, overrides, space) -> None:
    """Every key names a config key and each end of its range loads (one line per mistake, before any trial)."""
    for key, (kind, args) in space.items():
        values = args if kind == "choice" else [args[0], args[1]]
        for v in values:
            config_lib.load(config, list(overrides) + _overrides({key: v}, config, overrides, space))


def _primitive(v) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def _encode(values: list) -> list:
    """Optuna's categorical choices are primitives: mappings and lists go in as their JSON."""
    return [v if _primitive(v) else json.dumps(v, sort_keys=True) for v in values]


def _decode(v, values: list):
    for original in values:
        if (original if _primitive(original) else json.dumps(original, sort_keys=True)) == v:
            return original
    return v


def grid(space: dict, points: int) -> dict:
    """The grid sampler's values: choices as given, ranges at `points` points (log-spaced for log_uniform)."""
    out = {}
    for key, (kind, args) in space.items():
        if kind == "choice":
            out[key] = _encode(args)
        elif kind == "int":
            lo, hi = args
            out[key] = sorted({round(lo + (hi - lo) * i / (points - 1)) for i in range(points)})
        elif kind == "log_uniform":
            lo, hi = math.log(args[0]), math.log(args[1])
            out[key] = [float(f"{math.exp(lo + (hi - lo) * i / (points - 1)):.4g}") for i in range(points)]
        else:
            out[key] = [float(f"{args[0] + (args[1] - args[0]) * i / (points - 1):.4g}") for i in range(points)]
    return out


def suggest(trial, space: dict, grid_values: dict | None = None) -> dict:
    """The trial's value for every key (from `grid_values` under the grid sampler)."""
    params = {}
    for key, (kind, args) in space.items():
        if grid_values is not None:
            params[key] = _decode(trial.suggest_categorical(key, grid_values[key]), args if kind == "choice" else [])
        elif kind == "log_uniform":
            params[key] = trial.suggest_float(key, args[0], args[1], log=True)
        elif kind == "uniform":
            params[key] = trial.suggest_float(key, args[0], args[1])
        elif kind == "int":
            params[key] = trial.suggest_int(key, args[0], args[1])
        else:
            params[key] = _decode(trial.suggest_categorical(key, _encode(args)), args)
    return params


def _overrides(params: dict, config, overrides, space) -> list[str]:
    out = [f"{k}={json.dumps(v)}" for k, v in params.items()]
    if "model.name" in params and "model.params" not in space and not any(k.startswith("model.params") for k in space):
        if params["model.name"] != config_lib.load(config, list(overrides)).model.name:
            out.append("model.params={}")
    return out


# ---------------------------------------------------------------- one trial


def _open_storage(optuna, url: str, tries: int = 6):
    """Optuna's RDB storage for `url`, retried while another host creates the same tables.

    Two sessions started together on a new database both create its tables
    and its schema-version row; the slower one failed with "table studies
    already exists" or "UNIQUE constraint failed: alembic_version" (SQLite,
    one side of every try when two processes start at once) and the sweep
    stopped with a traceback. Retried, it finds the tables made.
    """
    retryable = ("already exists", "locked", "unique constraint", "duplicate")
    for attempt in range(tries):
        try:
            return optuna.storages.RDBStorage(url)
        except Exception as e:  # pylint: disable=broad-except
            text = str(e).lower()
            if attempt == tries - 1 or not any(r in text for r in retryable):
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def _minimize(objective: str) -> bool:
    return "loss" in objective or objective.endswith(("mae", "mse"))


def _read_history(path: Path) -> list:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):  # not written yet, or being replaced
        return []


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Sweep:
    """Runs an Optuna study whose trials are `tfpipe train` processes.

    Args:
        config: the YAML config every trial starts from.
        workdir: the study (`sweep.db`), trials (`trials/<n>/`), outputs.
        space: `load_space`'s result.
        overrides: `--set` strings applied to every trial first.
        n_trials: finished trials the study should have.
        sampler: `grid`, `random` or `tpe`.
        parallel: trials at once.
        storage: an RDB URL (default `sqlite:///W/sweep.db`).
        study_name: the study (default: the config's file stem).
        objective: the `history.json` key optimized (each epoch's value is
            reported for pruning).
        log: progress lines.
        cluster: `(workers, ps)`: a trial under multi_worker_mirrored or
            parameter_server trains as a localhost cluster of that many
            processes (`tfpipe launch_local`).
    """

    def __init__(self, config, workdir, space, overrides=(), n_trials=12, sampler="tpe", parallel=1, storage=None,
                 study_name=None, objective="val_accuracy", grid_points=3, prune_warmup_epochs=2,
                 prune_startup_trials=3, seed=0, timeout=3600.0, log=_print, cluster=(2, 1)):  # fmt: skip
        self.cluster = cluster
        import optuna  # pylint: disable=import-outside-toplevel

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.optuna = optuna
        self.config, self.workdir = os.path.abspath(config), Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.space, self.overrides, self.n_trials = space, list(overrides), n_trials
        self.parallel, self.objective, self.log, self.timeout = max(1, parallel), objective, log, timeout
        self.grid_values = grid(space, grid_points) if sampler == "grid" else None
        self.storage = storage or f"sqlite:///{(self.workdir / 'sweep.db').resolve()}"
        name = study_name or Path(config).stem
        rdb = _open_storage(optuna, self.storage)
        # A resumed session seeds its sampler past the trials already drawn:
        # the same seed would draw the same first points again.
        try:
            seed += len(optuna.load_study(study_name=name, storage=rdb).trials)
        except KeyError:  # a new study
            pass
        if storage:
            # A shared study: hosts started together see the same trial count;
            # with one seed their samplers would draw the same first points.
            seed += zlib.crc32(f"{socket.gethostname()}:{os.getpid()}".encode())
        seed %= 2**32  # NumPy's seed range
        samplers = {"grid": lambda: optuna.samplers.GridSampler(self.grid_values, seed=seed),
                    "random": lambda: optuna.samplers.RandomSampler(seed=seed),
                    "tpe": lambda: optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(5, n_trials))}
        self.study = optuna.create_study(
            study_name=name, storage=rdb, load_if_exists=True,
            direction="minimize" if _minimize(objective) else "maximize", sampler=samplers[sampler](),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=prune_startup_trials,
                                               # Epochs count from 1: pruning starts after this many.
                                               n_warmup_steps=prune_warmup_epochs + 1))  # fmt: skip
        self.host = socket.gethostname()
        # One GPU per trial where there are GPUs: a pool of their ids, each
        # trial's process sees only the one it took.
        self._gpus = queue.Queue()
        gpus = [g.strip() for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
        for g in gpus:
            self._gpus.put(g)
        self._has_gpus = bool(gpus)
        self._lock = threading.Lock()
        self.ran = []  # trial numbers this session ran

    # -------------------------------------------------------------- bookkeeping
    def _states(self):
        return self.optuna.trial.TrialState

    def finished(self) -> list:
        S = self._states()
        return [t for t in self.study.get_trials(deepcopy=False) if t.state in (S.COMPLETE, S.PRUNED, S.FAIL)]

    def _reclaim(self) -> None:
        """A trial this host left RUNNING whose sweep process is gone was killed with it: mark it failed."""
        S = self._states()
        for t in self.study.get_trials(deepcopy=False, states=(S.RUNNING,)):
            if t.user_attrs.get("host") == self.host and not _pid_alive(t.user_attrs.get("sweep_pid", -1)):
                self.study.tell(t.number, state=S.FAIL)
                if t.params:  # the same point again, as the next trial
                    self.study.enqueue_trial(t.params)
                self.log(f"[sweep] trial {t.number}: left running by a killed sweep (pid "
                         f"{t.user_attrs.get('sweep_pid')}); marked failed, its work is redone as a new trial")

    def _counted(self) -> int:
        # A trial that failed by itself says why (`error`); one failed by
        # `_reclaim` (its sweep was killed) does not count towards --trials.
        S = self._states()
        return sum(1 for t in self.study.get_trials(deepcopy=False) if t.state in (S.COMPLETE, S.PRUNED)
                   or (t.state == S.FAIL and "error" in t.user_attrs))

    # -------------------------------------------------------------- running
    def run(self) -> dict:
        """Runs trials until the study has `n_trials` finished ones; returns the `sweep.json` dict."""
        self._reclaim()
        before = self._counted()
        if before:
            self.log(f"[sweep] resuming study {self.study.study_name!r} in {self.storage}: {before} finished "
                     f"trial(s) kept, {max(0, self.n_trials - before)} to run")
        remaining = max(0, self.n_trials - before)
        # Optuna runs `parallel` threads, each waiting on its trial's process.
        # `remaining` bounds this session; `_finished` stops it sooner once the
        # study, which other hosts may share, has its trials.
        self.study.optimize(self._objective, n_trials=remaining, n_jobs=self.parallel, catch=(_TrialFailed,),
                            callbacks=[self._finished], gc_after_trial=False)
        return self.summary()

    def _finished(self, study, trial) -> None:
        """After each trial: its progress line, and the HParams dashboard rewritten."""
        with self._lock:
            self.ran.append(trial.number)
            done = self._counted()
        if done >= self.n_trials:
            # Other hosts sharing the study count too; trials already running
            # anywhere still finish, so a shared sweep may end a few past n.
            study.stop()
        self.log(f"[sweep] trial {trial.number} ({done}/{self.n_trials}): {' '.join(trial.user_attrs.get('overrides', []))}: "
                 f"{trial.user_attrs.get('outcome', trial.state.name)} ({trial.user_attrs.get('seconds')} s)")
        try:
            write_hparams(self.workdir / "hparams", self.space, self.objective, study)
        except Exception as e:  # pylint: disable=broad-except  # the dashboard never stops the sweep
            self.log(f"[sweep] warning: HParams not written ({type(e).__name__}: {e})")

    def _objective(self, trial) -> float:
        trial.set_user_attr("host", self.host)
        trial.set_user_attr("sweep_pid", os.getpid())
        params = suggest(trial, self.space, self.grid_values)
        ov = _overrides(params, self.config, self.overrides, self.space)
        trial.set_user_attr("overrides", ov)
        tdir = self.workdir / "trials" / str(trial.number)
        tdir.mkdir(parents=True, exist_ok=True)
        # Every epoch's history entry is written when its checkpoint is: one per epoch.
        cmd = [sys.executable, "-m", "tfpipe", "train", "--config", self.config, "--workdir", str(tdir / "run")]
        for o in self.overrides + ov + ["checkpoint.every_epochs=1", "profile.enabled=false"]:
            cmd += ["--set", o]
        # Under a multi-process strategy: a localhost cluster whose chief writes tdir/run.
        cmd = trials_lib.cluster_command(cmd, trials_lib.strategy_of(self.config, self.overrides + ov), self.cluster)
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        gpu = self._gpus.get() if self._has_gpus else None  # waits for a free one past --parallel GPUs
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
            trial.set_user_attr("gpu", gpu)
        try:
            return self._run_trial(trial, cmd, env, tdir)
        finally:
            if gpu is not None:
                self._gpus.put(gpu)

    def _run_trial(self, trial, cmd, env, tdir) -> float:
        start = time.perf_counter()
        history_path = tdir / "run" / "history.json"
        with open(tdir / "stdout.txt", "w", encoding="utf-8") as out, open(tdir / "stderr.txt", "w", encoding="utf-8") as err:
            proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err)
            trial.set_user_attr("child_pid", proc.pid)
            reported, pruned, values = 0, False, []
            while True:
                code = proc.poll()
                history = _read_history(history_path)
                for entry in history[reported:]:
                    if self.objective not in entry:
                        continue
                    values.append(float(entry[self.objective]))
                    trial.report(values[-1], entry["epoch"])
                    reported = len(history)
                    if trial.should_prune():
                        pruned = True
                        break
                reported = max(reported, len(history))
                if pruned or code is not None:
                    break
                if time.perf_counter() - start > self.timeout:
                    break
                time.sleep(0.25)
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # tfpipe checkpoints and exits 143
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        seconds = round(time.perf_counter() - start, 1)
        trial.set_user_attr("seconds", seconds)
        trial.set_user_attr("epochs", len(values))
        trial.set_user_attr("curve", values)
        best = (min(values) if _minimize(self.objective) else max(values)) if values else None
        if pruned:
            trial.set_user_attr("outcome", f"pruned after epoch {len(values)}")
            raise self.optuna.TrialPruned()
        if proc.returncode == 0 and best is not None:
            metrics = _read_json(tdir / "run" / "metrics.json")
            trial.set_user_attr("test_metrics", {k: v for k, v in metrics.items() if isinstance(v, (int, float))})
            trial.set_user_attr("outcome", f"{self.objective} {best:.4f} (best of {len(values)} epochs)")
            return best
        # A cluster's launcher prints its tasks' output, errors too, on stdout; its last line
        # names the task that failed, so the line before it is that task's error.
        clustered = "launch_local" in cmd
        lines = (tdir / ("stdout.txt" if clustered else "stderr.txt")).read_text(
            encoding="utf-8", errors="replace").strip().splitlines()
        if clustered:
            lines = [line for line in lines if not line.startswith("[launch]")]
        why = lines[-1][:300] if lines else f"exit status {proc.returncode}"
        if best is None and proc.returncode == 0:
            why = f"no {self.objective} in history.json (is there a validation split?)"
        trial.set_user_attr("error", why)
        trial.set_user_attr("outcome", f"failed: {why}")
        raise _TrialFailed(why)

    # -------------------------------------------------------------- results
    def summary(self) -> dict:
        S = self._states()
        rows = []
        for t in self.study.get_trials(deepcopy=False):
            rows.append({"number": t.number, "state": t.state.name, "value": t.value,
                         "params": {k: _decode(v, self.space[k][1] if self.space.get(k, ("", []))[0] == "choice" else [])
                                    for k, v in t.params.items()},
                         "epochs": t.user_attrs.get("epochs"), "curve": t.user_attrs.get("curve", []),
                         "seconds": t.user_attrs.get("seconds"), "overrides": t.user_attrs.get("overrides", []),
                         "test_metrics": t.user_attrs.get("test_metrics"), "error": t.user_attrs.get("error")})
        complete = [r for r in rows if r["state"] == "COMPLETE"]
        best = None
        if complete:
            bt = self.study.best_trial
            best = next(r for r in rows if r["number"] == bt.number)
        return {"config": self.config, "overrides": self.overrides, "storage": self.storage,
                "study": self.study.study_name, "objective": self.objective,
                "direction": self.study.direction.name.lower(), "trials": rows, "best": best,
                "counts": {s.name: sum(1 for r in rows if r["state"] == s.name) for s in (S.COMPLETE, S.PRUNED, S.FAIL)},
                "ran_this_session": sorted(self.ran)}


class _TrialFailed(Exception):
    """A trial's process failed (its reason is the trial's `error` attribute); the sweep goes on."""


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


# ---------------------------------------------------------------- TensorBoard HParams


def write_hparams(logdir: Path, space: dict, objective: str, study) -> None:
    """TensorBoard's HParams dashboard: the experiment (domains, metric) and one session per finished trial.

    Written with TensorBoard's own protos and event writer (no TensorFlow in
    the sweep's process). Rewritten whole after every trial: a session
    directory per trial number, `logdir/trial-<n>/`, holding the trial's
    hyperparameters and its objective per epoch.
    """
    import shutil  # pylint: disable=import-outside-toplevel

    from tensorboard.compat.proto import event_pb2  # pylint: disable=import-outside-toplevel
    from tensorboard.plugins.hparams import api as hp  # pylint: disable=import-outside-toplevel
    from tensorboard.plugins.hparams import summary_v2  # pylint: disable=import-outside-toplevel
    from tensorboard.compat.proto import summary_pb2  # pylint: disable=import-outside-toplevel
    from tensorboard.summary.writer.event_file_writer import EventFileWriter  # pylint: disable=import-outside-toplevel

    def emit(path: Path, summaries) -> None:
        w = EventFileWriter(str(path))
        for step, pb in summaries:
            # With TensorFlow installed TensorBoard's helpers return its proto classes: same wire format.
            pb = summary_pb2.Summary.FromString(pb.SerializeToString())
            w.add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=pb))
        w.close()

    hparams = {}
    for key, (kind, args) in space.items():
        if kind == "choice":
            values = _encode(args)
            same = all(type(v) is type(values[0]) for v in values) and not isinstance(values[0], bool)
            hparams[key] = hp.HParam(key, hp.Discrete(values if same else [str(v) for v in values]))
        elif kind == "int":
            hparams[key] = hp.HParam(key, hp.IntInterval(args[0], args[1]))
        else:
            hparams[key] = hp.HParam(key, hp.RealInterval(float(args[0]), float(args[1])))
    from optuna.trial import TrialState  # pylint: disable=import-outside-toplevel

    # Which trials the pruner stopped, as a column of the dashboard.
    state = hp.HParam("trial_state", hp.Discrete(["COMPLETE", "PRUNED"]))
    tmp = logdir.with_name(logdir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    emit(tmp, [(0, summary_v2.hparams_config_pb(hparams=list(hparams.values()) + [state],
                                                metrics=[hp.Metric(objective, display_name=objective)]))])
    for t in study.get_trials(deepcopy=False):
        if t.state not in (TrialState.COMPLETE, TrialState.PRUNED):
            continue
        values = {}
        for key, v in t.params.items():
            h = hparams.get(key)
            if h is None:
                continue
            if isinstance(h.domain, hp.Discrete) and not isinstance(v, type(h.domain.values[0])):
                v = str(v)
            values[h] = v
        values[state] = t.state.name
        curve = t.user_attrs.get("curve", [])
        pbs = [(0, summary_v2.hparams_pb(values, trial_id=f"trial-{t.number}"))]
        pbs += [(i + 1, summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=objective, simple_value=v)]))
                for i, v in enumerate(curve)]
        emit(tmp / f"trial-{t.number}", pbs)
    shutil.rmtree(logdir, ignore_errors=True)
    os.replace(tmp, logdir)


# ---------------------------------------------------------------- outputs


def chart(result: dict, path) -> None:
    """`sweep.png`: the objective per epoch of every trial (pruned dashed), and each trial's value."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=import-outside-toplevel
    from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel

    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 2, 1)
    for r in result["trials"]:
        if r["curve"]:
            style = "--" if r["state"] == "PRUNED" else "-"
            ax.plot(range(1, len(r["curve"]) + 1), r["curve"], style, linewidth=1,
                    color="#c0392b" if r["state"] == "PRUNED" else "#1f4e9c", alpha=0.8)
    ax.set_xlabel("epoch")
    ax.set_ylabel(result["objective"])
    c = result["counts"]
    ax.set_title(f"{c['COMPLETE']} complete (blue), {c['PRUNED']} pruned (red, dashed), {c['FAIL']} failed", fontsize=9)
    ax2 = fig.add_subplot(1, 2, 2)
    done = [r for r in result["trials"] if r["state"] == "COMPLETE"]
    ax2.bar([r["number"] for r in done], [r["value"] for r in done], color="#1f4e9c")
    if result["best"]:
        ax2.bar([result["best"]["number"]], [result["best"]["value"]], color="#2a9d4a", label="best")
        ax2.legend(fontsize=7)
    lo = min((r["value"] for r in done), default=0)
    hi = max((r["value"] for r in done), default=1)
    ax2.set_ylim(lo - 0.1 * (hi - lo + 1e-3), hi + 0.1 * (hi - lo + 1e-3))
    ax2.set_xlabel("trial")
    ax2.set_ylabel(f"{result['objective']} (best epoch)")
    ax2.set_title(f"{Path(result['config']).name}: study {result['study']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def write_outputs(result: dict, workdir: Path, log=_print) -> None:
    trials_lib.write_report(workdir, "sweep", result, chart, log, tag="[sweep]")
    keys = sorted({k for r in result["trials"] for k in r["params"]})
    log("[sweep] trial  state     " + f"{result['objective']:>12}  epochs  " + "  ".join(keys))
    order = sorted(result["trials"], key=lambda r: (r["value"] is None,
                                                    (r["value"] or 0) * (1 if result["direction"] == "minimize" else -1)))
    for r in order:
        value = f"{r['value']:>12.4f}" if r["value"] is not None else f"{'-':>12}"
        params = "  ".join(_short(r["params"].get(k)) for k in keys)
        log(f"[sweep] {r['number']:>5}  {r['state']:<8}  {value}  {r['epochs'] or 0:>6}  {params}")
    best = result["best"]
    if best:
        tuned = config_lib.load(result["config"], result["overrides"] + best["overrides"])
        config_lib.dump(tuned, workdir / "tuned.yaml")
        log(f"[sweep] best: trial {best['number']}, {result['objective']} {best['value']:.4f}: "
            + " ".join(best["overrides"]))
    log(f"[sweep] wrote {workdir / 'sweep.json'}, {workdir / 'sweep.png'}"
        + (f", {workdir / 'tuned.yaml'}" if best else "") + f"; HParams: tensorboard --logdir {workdir / 'hparams'}")


def _short(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return json.dumps(v) if not isinstance(v, str) else v


def default_parallel() -> int:
    """Trials at once: one per GPU where there are GPUs, else half the cores (at least 1)."""
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES")
    if gpus:
        return len([g for g in gpus.split(",") if g.strip()])
    return max(1, window.cores() // 2)


def sweep(config, workdir, space_path, overrides=(), log=_print, **kwargs) -> dict:
    """Runs (or resumes) a sweep and writes its outputs.

    Args:
        config: YAML config path.
        workdir: the study, trials and outputs.
        space_path: the search-space YAML.
        overrides: `--set` strings applied to every trial first.
        log: progress lines.
        **kwargs: `Sweep` arguments (`n_trials`, `sampler`, `parallel`, `storage`, ...).

    Returns:
        The `sweep.json` dict: `trials` (number, state, value, params,
        epochs, curve), `best`, `counts`, `ran_this_session`.

    Example:

    ```python
    from tfpipe.tune import sweep
    result = sweep.sweep("configs/digits_mlp.yaml", "runs/sweep", "benchmarks/tune_configs/digits_space.yaml",
                         n_trials=12)
    result["best"]["overrides"]
    ```
    """
    space = load_space(space_path)
    check_space(config, overrides, space)
    kwargs.setdefault("parallel", default_parallel())
    s = Sweep(config, workdir, space, overrides, log=log, **kwargs)
    log(f"[sweep] study {s.study.study_name!r} in {s.storage}; {kwargs.get('n_trials', 12)} trials, "
        f"{s.parallel} at once, objective {s.objective} ({s.study.direction.name.lower()})")
    result = s.run()
    write_outputs(result, Path(workdir), log)
    return result


def main(fl) -> int:
    """`scripts/tune.py sweep`: see `tfpipe.tune.cli`."""
    from tfpipe.tune import cli  # pylint: disable=import-outside-toplevel

    kwargs = dict(n_trials=fl.trials, sampler=fl.sampler, storage=fl.storage, study_name=fl.study,
                  objective=fl.objective, grid_points=fl.grid_points, prune_warmup_epochs=fl.prune_warmup_epochs,
                  prune_startup_trials=fl.prune_startup_trials, seed=fl.seed, timeout=fl.trial_timeout,
                  cluster=cli.cluster(fl))
    if fl.parallel:
        kwargs["parallel"] = fl.parallel
    sweep(fl.config, fl.workdir, fl.space, fl.set, **kwargs)
    return 0
