"""The typed config tree: YAML in, frozen dataclasses out.

One tree describes a run. `load(path, overrides)` reads a YAML file, applies
`a.b.c=value` overrides on top, rejects unknown keys (naming the closest valid
one), wrong types and out-of-range values, and returns a frozen `Config`.
`dump(cfg, path)` writes the resolved tree so that loading it again
reproduces the run.

Example:

```python
cfg = tfpipe.load_config("digits_mlp", overrides=["train.epochs=5"])  # a shipped config, by name
cfg = tfpipe.load_config("configs/digits_mlp.yaml")                    # or any file, by path
cfg.train.epochs  # 5
```
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from typing import Any, Optional

import yaml


class ConfigError(ValueError):
    """A config file or override that does not describe a valid run."""


def _yaml_problem(e: yaml.YAMLError) -> str:
    """PyYAML's error on one line: what and where (its own text spans several)."""
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    mark = getattr(e, "problem_mark", None)
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark else problem


class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false. YAML 1.1 also reads on/off/yes/no
    as booleans, which would turn `cache: off` into False with no warning."""


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in rs if tag != "tag:yaml.org,2002:bool"]
    for ch, rs in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
# YAML 1.2 floats too: YAML 1.1 wants a dot in the mantissa, so `1e-4` (a
# learning rate, a weight decay) would be read as the string '1e-4'.
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"), list("-+0123456789.")
)


def _yaml(text):
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader


def _field(default, *, min=None, max=None, choices=None, doc=""):
    """A dataclass field with a range or a set of choices checked at load."""
    meta = {"min": min, "max": max, "choices": choices, "doc": doc}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _section(cls):
    return dataclasses.field(default_factory=cls)


# ---------------------------------------------------------------- data


@dataclasses.dataclass(frozen=True)
class SplitConfig:
    """How a source without its own splits is cut into train/validation/test."""

    validation: float = _field(0.1, min=0.0, max=0.9)
    test: float = _field(0.2, min=0.0, max=0.9)
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class ShuffleConfig:
    # 0 turns shuffling off. The default holds all of the digits training split.
    buffer_size: int = _field(2048, min=0)
    # A fixed seed makes the order reproducible, which exact resume relies on.
    seed: Optional[int] = 0
    reshuffle_each_iteration: bool = True


@dataclasses.dataclass(frozen=True)
class MapConfig:
    # -1 is tf.data.AUTOTUNE; 1 is the sequential recipe: a plain map run in
    # the consumer's call (tf.data's parallel map with 1 call would still
    # work ahead in a background thread).
    num_parallel_calls: int = _field(-1, min=-1)
    # Preprocessing steps, in order: [{op: rescale, scale: 0.0625}, ...].
    # The ops and their arguments live in tfpipe/data/preprocess.py.
    steps: tuple = ()
    # Batch first, then run the steps on whole batches: one call per batch
    # instead of per example. Every step must then accept batches.
    vectorized: bool = False
    # Per-example map, but the trailing batch-capable steps (flip, normalize,
    # one_hot, ...) run after batching, once per batch.
    batch_tail: bool = False


@dataclasses.dataclass(frozen=True)
class FilesConfig:
    """Globs of the files a file source reads, per split (comma-separated globs allowed).

    An empty validation or test glob means the split is absent. For `npz`,
    `train` names the one file that `data.split` cuts into the three splits.
    """

    train: str = ""
    validation: str = ""
    test: str = ""


@dataclasses.dataclass(frozen=True)
class ReadConfig:
    """How file sources list and read their files (parallel interleave)."""

    # Files are sorted, then permuted with this seed (deterministic order).
    shuffle_files: bool = True
    seed: int = 0
    # Files read at once; -1 lets tf.data pick (the number of cores).
    cycle_length: int = _field(-1, min=-1)
    # Consecutive records taken from one file before moving to the next.
    block_length: int = _field(1, min=1)
    # Threads reading files; -1 is AUTOTUNE, 1 reads sequentially.
    num_parallel_calls: int = _field(-1, min=-1)


@dataclasses.dataclass(frozen=True)
class CsvConfig:
    header: bool = True
    delimiter: str = ","
    # Column name -> type (float, int, string); keys may be globs like "I*".
    # Columns absent from the header are an error; header columns not matched
    # here are read as strings.
    columns: dict = _field({})
    label_column: str = "label"
    # Class ids 0..num_classes-1 in an int label column. A string label
    # column (the default type) is mapped to ids from the training split's
    # sorted values instead, saved as WORKDIR/labels.json. 0 = no classes:
    # the label is a float regression target (set by a regression model.loss).
    num_classes: int = _field(2, min=0)


@dataclasses.dataclass(frozen=True)
class HoldoutConfig:
    """Splits cut from the training files when their own glob is empty (csv, image_folder).

    csv: that share of the rows of every training file, chosen by line
    number; image_folder: that share of each class's images. Both are fixed
    by data.split.seed, so every run and worker cuts the same examples.
    """

    validation: float = _field(0.0, min=0.0, max=0.9)
    test: float = _field(0.0, min=0.0, max=0.9)


@dataclasses.dataclass(frozen=True)
class TFRecordConfig:
    # A spec.json written by scripts/make_tfrecords.py; `features` overrides it.
    spec_file: str = ""
    # name -> {dtype: float32|int64|string, shape: [..], var_len: bool}.
    features: dict = _field({})
    label_key: str = "label"


@dataclasses.dataclass(frozen=True)
class NpzConfig:
    features_key: str = "x"
    label_key: str = "y"


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    num_examples: int = _field(1024, min=1)
    # name -> {shape: [..], dtype: float32|int64|uint8|string}; one feature
    # named "x" is returned as a tensor, several as a dict.
    features: dict = _field({"x": {"shape": [8], "dtype": "float32"}})
    num_classes: int = _field(10, min=1)
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class OptionsConfig:
    """`tf.data.Options` applied to the finished pipeline."""

    # 0 = share TensorFlow's global thread pool; N gives the input pipeline
    # its own N threads, so it cannot starve (or be starved by) the model.
    private_threadpool_size: int = _field(0, min=0)
    autotune: bool = True
    # 0 = all cores / no limit. Bounding them leaves room for the model.
    autotune_cpu_budget: int = _field(0, min=0)
    autotune_ram_budget_mb: int = _field(0, min=0)
    # tf.data adds a prefetch after the last stage on its own; baselines turn
    # it off to measure a really sequential pipeline.
    inject_prefetch: bool = True
    # tf.data fuses `map` followed by `batch` into MapAndBatch, which builds
    # batches in a background thread even at num_parallel_calls 1; baselines
    # turn it off so the sequential recipe really runs in the consumer's call.
    map_and_batch_fusion: bool = True


@dataclasses.dataclass(frozen=True)
class DataServiceConfig:
    # host:port of a tf.data service dispatcher (scripts/data_service.py);
    # "" keeps preprocessing in the training process.
    address: str = ""
    # parallel_epochs: every service worker produces the whole data set;
    # distributed_epoch: the dispatcher hands each example out once per epoch.
    processing_mode: str = _field("parallel_epochs", choices=("parallel_epochs", "distributed_epoch"))
    # Training processes that name the same job share one stream of batches
    # (each batch goes to one of them); "" gives each process its own job.
    job_name: str = ""


@dataclasses.dataclass(frozen=True)
class DataConfig:
    # A key of tfpipe.data.sources.SOURCES: digits, npz, csv, tfrecord, image_folder, synthetic;
    # or module:function naming the user's own, fn(data_cfg, split) (tfpipe.data.sources.imported).
    source: str = "digits"
    files: FilesConfig = _section(FilesConfig)
    read: ReadConfig = _section(ReadConfig)
    csv: CsvConfig = _section(CsvConfig)
    holdout: HoldoutConfig = _section(HoldoutConfig)
    tfrecord: TFRecordConfig = _section(TFRecordConfig)
    npz: NpzConfig = _section(NpzConfig)
    synthetic: SyntheticConfig = _section(SyntheticConfig)
    split: SplitConfig = _section(SplitConfig)
    # How input pipelines (one per worker) divide the data: auto, file, data, off.
    shard_policy: str = _field("auto", choices=("auto", "file", "data", "off"))
    # "" = no cache, "memory", or a file path prefix for an on-disk cache.
    cache: str = "memory"
    shuffle: ShuffleConfig = _section(ShuffleConfig)
    map: MapConfig = _section(MapConfig)
    # Training batches are always full when the stream repeats; this applies
    # to evaluation batches and to non-repeating training data.
    drop_remainder: bool = False
    # padded_batch instead of batch, for variable-length features.
    padded_batch: bool = False
    # -1 is tf.data.AUTOTUNE, 0 turns prefetching off.
    prefetch: int = _field(-1, min=-1)
    # Measuring only: train on the first batch, cached and repeated (the
    # tf.data paper's "perfect input" bound; benchmarks/diagnosis.py); with
    # in_graph, every step gathers that batch.
    repeat_one_batch: bool = False
    # Hold the preprocessed training split in memory as tensors and gather
    # each batch inside the compiled step (a seeded permutation per epoch):
    # no tf.data iterator per step. For data that fits in memory with
    # deterministic steps, on sub-millisecond steps where handing each batch
    # over from tf.data's threads is a large share (tfpipe/train/inputs.py).
    in_graph: bool = False
    deterministic: bool = True
    options: OptionsConfig = _section(OptionsConfig)
    # Preflight before training: "full" reads every record (and decodes every
    # image) to find bad ones, "quick" checks every image header, TFRecord
    # framing and the first records/lines (bounded time), "off" skips it and
    # the in-graph label and NaN/inf checks (tfpipe/data/guards.py).
    check: str = _field("quick", choices=("full", "quick", "off"))
    # Skip bad records instead of failing; needs check: full, which counts them.
    ignore_errors: bool = False
    # Run the preprocessing on tf.data service workers instead of this host.
    service: DataServiceConfig = _section(DataServiceConfig)


# ---------------------------------------------------------------- model

# Losses whose labels are float targets, not class ids.
REGRESSION_LOSSES = ("mse", "mae")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    # A key of tfpipe.models.MODELS, or module:function naming a builder
    # (input_shape, num_classes, **params) -> keras.Model.
    name: str = "mlp"
    # Keyword arguments of the builder; checked against its signature.
    params: dict = _field({})
    # auto: sparse_categorical_crossentropy for class-id labels,
    # categorical_crossentropy for one-hot ones (after a one_hot step); decided
    # from the training batches' label shape, so load_config() alone trains.
    # mse and mae train regression: float targets, one linear output, mae
    # reported instead of accuracy.
    loss: str = _field(
        "auto",
        choices=("auto", "categorical_crossentropy", "sparse_categorical_crossentropy", "binary_crossentropy")
        + REGRESSION_LOSSES,
    )
    # Kernel L2: l2 * sum(kernel ** 2) over every variable named *kernel (Dense,
    # Conv), added to the training loss (biases, norms, embeddings untouched).
    l2: float = _field(0.0, min=0.0)


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    """The learning rate over training (tfpipe/train/schedules.py).

    Rates are `optimizer.learning_rate` times a factor; positions (warmup,
    boundaries, every, length) are counted in `unit`.
    """

    name: str = _field("constant", choices=("constant", "piecewise", "step", "exponential", "cosine", "plateau"))
    unit: str = _field("epochs", choices=("epochs", "steps"))
    # Linear warm-up from 0 to the rate over this long, before any schedule.
    warmup: float = _field(0.0, min=0.0)
    # piecewise: the factor is values[i] from boundaries[i-1] on (len(values) = len(boundaries) + 1).
    boundaries: tuple = ()
    values: tuple = ()
    # step: times decay_rate every `every`; exponential: decay_rate ** (t / every), smoothly.
    every: float = _field(0.0, min=0.0)
    # step, exponential, plateau: the multiplier.
    decay_rate: float = _field(0.1, min=0.0)
    # cosine: decays over `length` after the warm-up (0 = to the end of training), down to alpha.
    length: float = _field(0.0, min=0.0)
    alpha: float = _field(0.0, min=0.0, max=1.0)
    # plateau: times decay_rate when `monitor` (a validation metric) has not
    # improved by min_delta for `patience` epochs; never below min_lr.
    monitor: str = "val_loss"
    patience: int = _field(5, min=1)
    min_delta: float = _field(0.0, min=0.0)
    min_lr: float = _field(0.0, min=0.0)


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    # Any name keras.optimizers.get understands: adam, sgd, rmsprop, adamw, ...
    name: str = "adam"
    learning_rate: float = _field(1e-3, min=0.0)
    # adam and adamw: update with TensorFlow's fused kernel (same arithmetic,
    # one op per variable instead of ~29); false = Keras's own update_step.
    # Other optimizers always use Keras's. See tfpipe/train/optimizers.py.
    fused: bool = True
    # Decoupled weight decay (AdamW-style, any Keras optimizer): each step
    # w -= learning_rate * weight_decay * w, apart from the gradient.
    weight_decay: float = _field(0.0, min=0.0)
    # Gradient clipping (0 = off), applied to the gradient summed over all
    # replicas: clipnorm per variable, global_clipnorm over all of them.
    clipnorm: float = _field(0.0, min=0.0)
    global_clipnorm: float = _field(0.0, min=0.0)
    schedule: ScheduleConfig = _section(ScheduleConfig)


# ---------------------------------------------------------------- training


@dataclasses.dataclass(frozen=True)
class EarlyStoppingConfig:
    """Stop when a validation metric stops improving (tfpipe/train/stopping.py)."""

    enabled: bool = False
    # val_loss or val_<metric> of train.metrics.
    monitor: str = "val_loss"
    # Epochs without an improvement of more than min_delta before stopping.
    patience: int = _field(5, min=1)
    min_delta: float = _field(0.0, min=0.0)
    # auto: min for losses and errors (loss, mae, mse), max for the others.
    mode: str = _field("auto", choices=("auto", "min", "max"))
    # Put the best epoch's weights back before the test evaluation and export.
    restore_best: bool = True


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    # Global batch: split evenly across replicas.
    batch_size: int = _field(32, min=1)
    epochs: int = _field(50, min=1)
    # Steps run inside one tf.function call: amortises Python and dispatch
    # overhead. Clipped at epoch ends.
    steps_per_loop: int = _field(50, min=1)
    # 0 = one epoch is one pass over the training split.
    steps_per_epoch: int = _field(0, min=0)
    # A step with a non-finite loss or gradient: stop the run (naming the
    # step), or skip its batch and go on. See tfpipe/train/faults.py.
    on_nonfinite: str = _field("stop", choices=("stop", "skip", "off"))
    # With skip: stop anyway after this many skipped batches.
    max_skipped_steps: int = _field(100, min=0)
    # Reported beside the loss: accuracy, top_k (top_5; top_3 etc. also),
    # auc, precision, recall, mae, mse. Empty: accuracy for classification,
    # mae for regression (tfpipe/train/metrics.py).
    metrics: tuple = ()
    # Cross-entropy against (1 - s) * label + s / classes (training loss only).
    label_smoothing: float = _field(0.0, min=0.0, max=0.99)
    # Per-class weights of the training loss: a list (one per class), a
    # mapping class id -> weight (others 1), or "balanced" (n / (classes * count)
    # from the training labels). Empty: none.
    class_weights: typing.Any = None
    early_stopping: EarlyStoppingConfig = _section(EarlyStoppingConfig)


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    every_epochs: int = _field(1, min=1)
    # Also save every this many steps (0 = off): bounds the work lost to a
    # kill to this many steps, mid-epoch too.
    every_steps: int = _field(0, min=0)
    keep: int = _field(3, min=1)
    # How the input position is saved: iterator (in the checkpoint), replay
    # (rebuild and skip consumed batches), auto. See tfpipe/train/inputs.py.
    input: str = _field("auto", choices=("auto", "iterator", "replay"))


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """The serving export written at the end of training (tfpipe/serve/export.py)."""

    # Also write a SavedModel with the deterministic preprocessing inside, in
    # TensorFlow Serving's layout export/<name>/<version>/ (costs a few seconds).
    serving: bool = False
    # Model name in the layout and the REST path; "" = model.name.
    name: str = ""


@dataclasses.dataclass(frozen=True)
class PlacementConfig:
    """A model split into sequential stages, each on its own device (tfpipe/train/placement.py).

    Off while `devices` is empty. Stage k runs the layers after
    `split_after[k-1]` up to and including `split_after[k]` on `devices[k]`;
    the backward pass of each stage runs on its device too.
    """

    # One device per stage, e.g. ["/gpu:0", "/gpu:1"] (or "/cpu:0", "/cpu:1"
    # with runtime.logical_cpus: 2).
    devices: tuple = ()
    # Names of the layers each stage ends with: one fewer than devices.
    split_after: tuple = ()
    # Each batch cut into this many micro-batches, so stage 2 can work on
    # one while stage 1 works on the next (GPipe's schedule); 1: no pipelining.
    micro_batches: int = _field(1, min=1)


@dataclasses.dataclass(frozen=True)
class VariablePartitionerConfig:
    """How parameter_server splits large variables (embedding tables) across the ps tasks.

    Each variable the partitioner splits becomes a `ShardedVariable` whose
    shards sit on different ps tasks, so a table larger than one server's
    memory fits, and lookups (`tfpipe.models.layers.ShardableEmbedding`) read
    only the rows a batch asks for. See README, "Model parallelism".
    """

    # none: every variable whole, on one ps (round-robin); min_size: split a
    # variable only into shards of at least min_shard_bytes (small ones stay
    # whole); fixed: every variable into num_shards shards, however small.
    kind: str = _field("none", choices=("none", "min_size", "fixed"))
    # min_size: the smallest shard; variables smaller than twice this stay whole.
    min_shard_bytes: int = _field(256 << 10, min=1)
    # min_size: at most this many shards per variable (0 = one per ps task).
    max_shards: int = _field(0, min=0)
    # fixed: shards per variable (0 = one per ps task).
    num_shards: int = _field(0, min=0)


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
    strategy: str = _field(
        "default",
        choices=("default", "one_device", "mirrored", "multi_worker_mirrored", "parameter_server", "tpu"),
    )
    # Which devices hold the replicas: auto (GPUs if present, else CPUs), cpu
    # or gpu (an error at start when this machine has none).
    device: str = _field("auto", choices=("auto", "cpu", "gpu"))
    # TPU name or grpc:// address for strategy tpu; "" means the local TPU.
    tpu: str = ""
    # linear multiplies optimizer.learning_rate by the number of replicas in
    # sync (the global batch grows with them); none keeps it.
    lr_scaling: str = _field("none", choices=("none", "linear"))
    # Compute in 16 bits, keep variables in float32; float16 adds loss scaling.
    mixed_precision: str = _field("none", choices=("none", "mixed_float16", "mixed_bfloat16"))
    # Compile the forward and backward pass of each step with XLA.
    jit_compile: bool = False
    # Model parallelism inside one replica: stages of the model on devices.
    placement: PlacementConfig = _section(PlacementConfig)
    # Split the host CPU into this many logical devices (0 = leave as is), so
    # that a multi-replica strategy can be tried on a machine without GPUs.
    logical_cpus: int = _field(0, min=0)
    # TensorFlow's op threads: inter between independent ops, intra inside
    # one op (a matmul split across cores). 0 = TensorFlow's choice, one per
    # core. Steps of tiny ops (the digits MLP: ~0.3 ms of ~150 ops) lose more
    # to handing work between threads than they gain; intra 1 made them
    # faster here (BENCHMARKS.md, loop overhead). Large convolutions or
    # matmuls want intra-op threads. Set before TensorFlow starts; tf.data
    # has its own thread pool (data.options.private_threadpool_size).
    inter_op_threads: int = _field(0, min=0)
    intra_op_threads: int = _field(0, min=0)
    seed: int = 0
    # parameter_server only: split large variables across the ps tasks.
    variable_partitioner: VariablePartitionerConfig = _section(VariablePartitionerConfig)


@dataclasses.dataclass(frozen=True)
class ProfileConfig:
    """The profiler window, the optional profiler server and the always-on timer."""

    # Capture one trace window and write report.json (see tfpipe/profile/trace.py).
    enabled: bool = True
    # The window opens at the first loop call starting at or after this step,
    # after one untraced call that compiles the traced loop. Early steps are
    # dominated by tracing, cache filling and tf.data autotuning and would
    # mislead the report; runs shorter than this are not profiled.
    start_step: int = _field(200, min=0)
    # Steps the window covers, rounded up to whole loop calls.
    num_steps: int = _field(100, min=1)
    # A server for on-demand capture (0 = none), bound to server_host:
    # tfpipe's own capture endpoint (tfpipe/profile/capture_server.py). "all" starts
    # TensorFlow's gRPC profiler server instead, which TF 2.21 binds to every
    # interface ([::]:port, it has no host argument); TensorBoard's "Capture
    # profile" button talks to that one.
    server_port: int = _field(0, min=0, max=65535)
    server_host: str = "127.0.0.1"
    # Time each step's wait for its batch (input_wait_fraction); off only to
    # measure what the timing costs.
    measure_input_wait: bool = True
    # After a profiled run, measure the same step fed one cached batch (the
    # tf.data paper's perfect input) for the report's speed-up: about a
    # second; every variable is put back (tfpipe/train/probe.py). Single-host
    # strategies only.
    perfect_input_probe: bool = True


@dataclasses.dataclass(frozen=True)
class Config:
    data: DataConfig = _section(DataConfig)
    model: ModelConfig = _section(ModelConfig)
    optimizer: OptimizerConfig = _section(OptimizerConfig)
    train: TrainConfig = _section(TrainConfig)
    checkpoint: CheckpointConfig = _section(CheckpointConfig)
    export: ExportConfig = _section(ExportConfig)
    runtime: RuntimeConfig = _section(RuntimeConfig)
    profile: ProfileConfig = _section(ProfileConfig)


# ---------------------------------------------------------------- loading


def shipped() -> dict[str, str]:
    """The configs installed with tfpipe: name -> path (`digits_mlp` -> .../tfpipe/configs/digits_mlp.yaml)."""
    import importlib.resources  # pylint: disable=import-outside-toplevel

    folder = importlib.resources.files("tfpipe.configs")
    return {
        entry.name[: -len(".yaml")]: os.fspath(entry)
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".yaml")
    }


def resolve_path(path: str | os.PathLike) -> str:
    """A config file from a path, or from the name of a shipped config.

    An existing file wins; otherwise a bare name (`digits_mlp`, also
    `digits_mlp.yaml` or `configs/digits_mlp.yaml` as written in a checkout)
    names a config shipped inside the package.

    Raises:
        ConfigError: neither a file nor a shipped name, listing the names.
    """
    where = os.fspath(path)
    if os.path.isfile(where):
        return where
    names = shipped()
    stem = os.path.basename(where)
    stem = stem[: -len(".yaml")] if stem.endswith(".yaml") else stem
    parent = os.path.dirname(where)
    if stem in names and parent in ("", "configs"):
        return names[stem]
    raise ConfigError(f"{where}: no such config file, and not a shipped config (expected one of {', '.join(names)})")


def load(path: str | os.PathLike | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Reads a YAML config, applies overrides, and returns a validated tree.

    Args:
        path: a YAML file, or the name of a shipped config (`"digits_mlp"`,
            see `shipped()`); None starts from the defaults.
        overrides: strings `a.b.c=value`; the value is parsed as YAML, so
            `train.epochs=5` gives an int and `data.cache=""` an empty string.

    Returns:
        A frozen `Config`.

    Raises:
        ConfigError: naming the file or override, the key and what was
            expected, for unknown keys, wrong types and values out of range.
    """
    raw: dict = {}
    where = "<defaults>"
    if path is not None:
        where = resolve_path(path)
        try:
            with open(where, encoding="utf-8") as f:
                raw = _yaml(f) or {}
        except FileNotFoundError:
            raise ConfigError(f"{where}: no such config file") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{where}: not valid YAML: {_yaml_problem(e)}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: expected a mapping at the top level, got {type(raw).__name__}")
    cfg = _build(Config, raw, prefix="", where=where)
    for item in overrides:
        cfg = _apply_override(cfg, item)
    cfg = _regression_targets(cfg, where)
    _check_cross_field(cfg, where)
    return cfg


def _regression_targets(cfg: Config, where: str) -> Config:
    """A regression loss reads the CSV label as a float target: no classes (csv.num_classes 0).

    Written into the tree (and so into the run's config.yaml) rather than
    left implicit, so the data side needs to know nothing of losses.
    """
    regression = cfg.model.loss in REGRESSION_LOSSES
    if regression and cfg.data.source == "csv" and cfg.data.csv.num_classes != 0:
        csv = dataclasses.replace(cfg.data.csv, num_classes=0)
        return replace(cfg, data=dataclasses.replace(cfg.data, csv=csv))
    if cfg.model.loss == "auto" and cfg.data.source == "csv" and cfg.data.csv.num_classes == 0:
        return replace(cfg, model=dataclasses.replace(cfg.model, loss="mse"))  # no classes: a regression
    if not regression and cfg.data.source == "csv" and cfg.data.csv.num_classes == 0:
        raise ConfigError(
            f"{where}: data.csv.num_classes: 0 means float regression targets, but model.loss is "
            f"{cfg.model.loss!r}; use model.loss: mse or mae, or give the number of classes"
        )
    return cfg


def to_dict(cfg) -> dict:
    """The config tree as plain dicts, lists and scalars (YAML-safe)."""

    def plain(v):
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(cfg)


def lookup(tree: dict | None, dotted: str):
    """The value at `dotted` ("data.map.num_parallel_calls") in a `to_dict` tree, None if absent."""
    node = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def dump(cfg: Config, path: str | os.PathLike) -> None:
    """Writes the resolved config; `load(path)` gives back an equal tree."""
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(to_dict(cfg), f, sort_keys=False)


def replace(cfg: Config, **sections) -> Config:
    """A copy of `cfg` with whole sections replaced, e.g. `replace(cfg, train=...)`."""
    return dataclasses.replace(cfg, **sections)


def _apply_override(cfg: Config, item: str) -> Config:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {item!r}: expected the form a.b.c=value")
    try:
        value = _yaml(text) if text.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {item!r}: value is not valid YAML: {_yaml_problem(e)}") from None
    tree = to_dict(cfg)
    node = tree
    parts = key.split(".")
    for depth, part in enumerate(parts[:-1]):
        if not isinstance(node, dict) or part not in node:
            _unknown_key(".".join(parts[: depth + 1]), f"override {item!r}")
        node = node[part]
    if not isinstance(node, dict) or parts[-1] not in node:
        # Free-form dicts (model.params) accept new keys; their builder checks them.
        if not (isinstance(node, dict) and _is_free_form(parts[:-1])):
            _unknown_key(key, f"override {item!r}")
    node[parts[-1]] = value
    return _build(Config, tree, prefix="", where=f"override {item!r}")


def _is_free_form(parts) -> bool:
    cls: Any = Config
    for part in parts:
        if not dataclasses.is_dataclass(cls):
            return False
        hints = typing.get_type_hints(cls)
        if part not in hints:
            return False
        cls = hints[part]
    return cls is dict


def _all_keys(cls=Config, prefix="") -> list[str]:
    keys = []
    for name, tp in typing.get_type_hints(cls).items():
        dotted = f"{prefix}{name}"
        keys.append(dotted)
        if dataclasses.is_dataclass(tp):
            keys.extend(_all_keys(tp, dotted + "."))
    return keys


def _unknown_key(dotted: str, where: str):
    close = difflib.get_close_matches(dotted, _all_keys(), n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"{where}: unknown key {dotted!r}{hint}")


def _build(cls, raw, prefix: str, where: str):
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: {prefix.rstrip('.') or 'config'}: expected a mapping, got {_show(raw)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            _unknown_key(f"{prefix}{key}", where)
    values = {}
    for name, f in fields.items():
        if name not in raw:
            continue
        dotted = f"{prefix}{name}"
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            values[name] = _build(tp, raw[name], dotted + ".", where)
        else:
            values[name] = _coerce(raw[name], tp, dotted, where)
            _check_range(values[name], f.metadata, dotted, where)
    return cls(**values)


def _show(value) -> str:
    return f"{type(value).__name__} {value!r}"


def _coerce(value, tp, dotted: str, where: str):
    def fail(expected):
        raise ConfigError(f"{where}: {dotted}: expected {expected}, got {_show(value)}")

    if tp is typing.Any:  # free-form (train.class_weights); its own check follows at load
        return list(value) if isinstance(value, tuple) else value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], dotted, where)
    if tp is bool:
        if not isinstance(value, bool):
            fail("true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail("an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail("a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            fail("a string")
        return value
    if tp is dict:
        if not isinstance(value, dict):
            fail("a mapping")
        return value
    if tp is tuple or origin is tuple:
        if not isinstance(value, (list, tuple)):
            fail("a list")
        return tuple(value)
    raise TypeError(f"config field {dotted} has unsupported type {tp}")


def _check_range(value, meta, dotted: str, where: str):
    if value is None:
        return
    lo, hi, choices = meta.get("min"), meta.get("max"), meta.get("choices")
    if choices is not None and value not in choices:
        close = difflib.get_close_matches(str(value), choices, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{where}: {dotted}: expected one of {', '.join(choices)}, got {value!r}{hint}")
    if lo is not None and value < lo:
        raise ConfigError(f"{where}: {dotted}: expected a value >= {lo}, got {value!r}")
    if hi is not None and value > hi:
        raise ConfigError(f"{where}: {dotted}: expected a value <= {hi}, got {value!r}")


def _check_cross_field(cfg: Config, where: str):
    split = cfg.data.split
    if split.validation + split.test >= 1.0:
        raise ConfigError(
            f"{where}: data.split: validation + test must leave some training data, "
            f"got {split.validation} + {split.test} >= 1"
        )
    for key, value in (("map", cfg.data.map.num_parallel_calls), ("read", cfg.data.read.num_parallel_calls)):
        if value == 0:  # tf.data rejects 0 only when the pipeline runs
            raise ConfigError(f"{where}: data.{key}.num_parallel_calls: expected -1 (AUTOTUNE) or >= 1, got 0")
    holdout = cfg.data.holdout
    for split in ("validation", "test"):
        if getattr(holdout, split) and getattr(cfg.data.files, split):
            raise ConfigError(
                f"{where}: data.holdout.{split}: cuts a {split} split from the training files, "
                f"but data.files.{split} is {getattr(cfg.data.files, split)!r}; set one of them"
            )
    if (holdout.validation or holdout.test) and cfg.data.source not in ("csv", "image_folder"):
        raise ConfigError(
            f"{where}: data.holdout: cuts splits from csv and image_folder files, not data.source "
            f"{cfg.data.source!r} (in-memory sources are cut by data.split)"
        )
    if holdout.validation + holdout.test >= 1.0:
        raise ConfigError(
            f"{where}: data.holdout: validation + test must leave some training data, "
            f"got {holdout.validation} + {holdout.test} >= 1"
        )
    if cfg.data.ignore_errors and cfg.data.check != "full":
        raise ConfigError(
            f"{where}: data.ignore_errors: true needs data.check: full (it counts what is skipped), "
            f"got data.check: {cfg.data.check!r}"
        )
    if cfg.data.in_graph:
        _check_in_graph(cfg, where)
    if cfg.runtime.placement.devices:
        _check_placement(cfg, where)
    if cfg.runtime.variable_partitioner.kind != "none" and cfg.runtime.strategy != "parameter_server":
        raise ConfigError(
            f"{where}: runtime.variable_partitioner.kind: {cfg.runtime.variable_partitioner.kind!r} splits variables "
            f"across parameter servers and needs runtime.strategy: parameter_server, got {cfg.runtime.strategy!r}"
        )
    _check_recipes(cfg, where)
    # Checked here rather than at build time so a typo fails before training starts.
    from tfpipe import importpath, models  # pylint: disable=import-outside-toplevel
    from tfpipe.data import preprocess, sources  # pylint: disable=import-outside-toplevel

    if importpath.is_import_path(cfg.data.source):
        # Imported now, so a typo in the path fails before training starts;
        # what the function returns is checked when the run calls it.
        try:
            importpath.load(cfg.data.source, "data.source")
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None
    elif cfg.data.source not in sources.SOURCES:
        raise ConfigError(
            f"{where}: data.source: expected one of {', '.join(sorted(sources.SOURCES))} or module:function, "
            f"got {cfg.data.source!r}"
        )
    try:
        preprocess.check_steps(cfg.data.map.steps, where=where, vectorized=cfg.data.map.vectorized)
        models.check(cfg.model.name, cfg.model.params, where=where)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _check_in_graph(cfg: Config, where: str):
    """data.in_graph: the split is preprocessed once and held, so only inputs that allow it."""
    from tfpipe.data import preprocess  # pylint: disable=import-outside-toplevel

    d = cfg.data
    if why := preprocess.in_graph_blocker(d.map.steps, d.service.address, d.padded_batch, cfg.runtime.strategy):
        raise ConfigError(f"{where}: data.in_graph: {why}")


def _check_placement(cfg: Config, where: str):
    """runtime.placement: one device per stage, one replica, whole micro-batches."""
    p = cfg.runtime.placement
    if len(p.split_after) != len(p.devices) - 1 or len(p.devices) < 2:
        raise ConfigError(
            f"{where}: runtime.placement: expected at least 2 devices and one split_after layer name fewer than "
            f"devices, got devices {list(p.devices)} and split_after {list(p.split_after)}"
        )
    if cfg.runtime.strategy != "default":
        raise ConfigError(
            f"{where}: runtime.placement: splits the model of one replica; expected runtime.strategy: default, "
            f"got {cfg.runtime.strategy!r}"
        )
    if cfg.runtime.jit_compile:
        raise ConfigError(f"{where}: runtime.placement: XLA compiles a step for one device; turn runtime.jit_compile off")
    if cfg.train.batch_size % p.micro_batches:
        raise ConfigError(
            f"{where}: runtime.placement.micro_batches: {p.micro_batches} must divide train.batch_size "
            f"{cfg.train.batch_size}"
        )


def _check_recipes(cfg: Config, where: str):
    """The training-recipe keys: schedule shapes, metric names, monitors, class weights."""
    from tfpipe.train import recipes  # pylint: disable=import-outside-toplevel  # no TensorFlow in it

    try:
        recipes.check(cfg)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None
