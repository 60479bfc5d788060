"""Step time of a sharded embedding lookup against Keras `Embedding` as the table grows.

    python benchmarks/sharded_embedding.py [--rows 100000,1000000,10000000] [--steps 60]

For each table size and each layer (`ShardableEmbedding`, tfpipe's lookup
that reads only the rows asked for, and `keras.layers.Embedding`), one
parameter-server cluster on 127.0.0.1: 2 ps tasks, 1 worker and the chief,
started by this script. The chief builds ids [batch, 26] -> embedding
[rows, 16] -> Dense 1 under `ParameterServerStrategy` with a
`MinSizePartitioner` (the table split in two, one shard per ps), trains with
Adam against the shards (`tfpipe.distribute.sharding.train_variables`) and
times `--steps` steps after `--warmup` (median of 3 timed blocks, each
scheduled and joined). Afterwards the script reads each ps process's peak
resident memory (VmHWM). The variants run one after another, not
interleaved: each is a new cluster. Results: benchmarks/results/sharded_embedding.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

BATCH, COLUMNS, DIM = 512, 26, 16
SERVE = ("from tfpipe import config; from tfpipe.distribute import strategies; "
         "strategies.serve_parameter_server_task(config.load(None, ['runtime.strategy=parameter_server']).runtime)")


def chief(rows: int, layer: str, steps: int, warmup: int, out: str, optimizer_name: str = "adam") -> None:
    """The coordinator: builds, trains, times; writes `out`."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from tfpipe.distribute import sharding  # pylint: disable=import-outside-toplevel
    from tfpipe.models.layers import ShardableEmbedding  # pylint: disable=import-outside-toplevel

    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    partitioner = tf.distribute.experimental.partitioners.MinSizePartitioner(min_shard_bytes=256 << 10, max_shards=2)
    strategy = tf.distribute.ParameterServerStrategy(resolver, variable_partitioner=partitioner)
    coordinator = tf.distribute.coordinator.ClusterCoordinator(strategy)
    with strategy.scope():
        ids = keras.Input((COLUMNS,), dtype="int64")
        table = ShardableEmbedding(rows, DIM) if layer == "sharded_lookup" else keras.layers.Embedding(rows, DIM)
        out_layer = keras.layers.Dense(1)
        model = keras.Model(ids, out_layer(keras.layers.Flatten()(table(ids))))
        # Adam decays every row's moments each step (dense in the table's size);
        # SGD touches only the rows of the batch.
        optimizer = keras.optimizers.Adam(1e-3) if optimizer_name == "adam" else keras.optimizers.SGD(0.1)
        variables = sharding.train_variables(model)
        optimizer.build(variables)
    shards = [(v.name, list(v.shape), v.device) for v in sharding.train_variables(model) if len(v.shape) == 2
              and v.shape[1] == DIM]

    def dataset_fn():
        ds = tf.data.Dataset.random(seed=0).batch(BATCH * COLUMNS).map(
            lambda x: (tf.reshape(x % rows, (BATCH, COLUMNS)), tf.cast(tf.reshape(x[:BATCH] % 2, (BATCH, 1)), tf.float32)))
        return ds.prefetch(2)

    iterator = iter(coordinator.create_per_worker_dataset(tf.function(dataset_fn, autograph=False)))

    @tf.function
    def step(it):
        def replica(x, y):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(model(x, training=True) - y))
            grads = tape.gradient(loss, variables)
            optimizer.apply_gradients(zip(grads, variables))
            return loss

        return strategy.run(replica, args=next(it))

    def block(n):
        start = time.perf_counter()
        for _ in range(n):
            coordinator.schedule(step, args=(iterator,))
        coordinator.join()
        return (time.perf_counter() - start) / n

    block(warmup)
    times = [block(steps) for _ in range(3)]
    Path(out).write_text(json.dumps({"ms_per_step": 1000 * statistics.median(times),
                                     "blocks_ms": [1000 * t for t in times], "shards": shards}))


def _vmhwm_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def run_variant(rows: int, layer: str, args) -> dict:
    from tfpipe.distribute import launch  # pylint: disable=import-outside-toplevel

    cluster = launch.cluster_spec(num_workers=1, num_ps=2)
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    procs = {}
    out = Path(args.workdir) / f"{layer}_{args.optimizer}_{rows}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    start = time.perf_counter()
    try:
        for job, n in (("ps", 2), ("worker", 1)):
            for i in range(n):
                tf_config = json.dumps({"cluster": cluster, "task": {"type": job, "index": i}})
                procs[(job, i)] = subprocess.Popen([sys.executable, "-c", SERVE], env={**env, "TF_CONFIG": tf_config},
                                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "chief", "index": 0}})
        subprocess.run([sys.executable, __file__, "--chief", "--rows", str(rows), "--layer", layer, "--steps",
                        str(args.steps), "--warmup", str(args.warmup), "--out", str(out), "--optimizer", args.optimizer],
                       env={**env, "TF_CONFIG": tf_config}, check=True, timeout=1800)
        ps_mb = [round(_vmhwm_mb(procs[("ps", i)].pid), 1) for i in range(2)]
    finally:
        for p in procs.values():
            p.kill()
            p.wait()
    result = json.loads(out.read_text())
    return {"rows": rows, "layer": layer, "optimizer": args.optimizer, "ms_per_step": round(result["ms_per_step"], 3),
            "blocks_ms": [round(t, 3) for t in result["blocks_ms"]], "ps_peak_rss_mb": ps_mb,
            "shards": result["shards"], "seconds": round(time.perf_counter() - start, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="100000,1000000,10000000")
    parser.add_argument("--layers", default="sharded_lookup,keras_embedding")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=15)
    parser.add_argument("--optimizer", default="adam", choices=("adam", "sgd"))
    parser.add_argument("--workdir", default="/tmp/tfpipe-sharded-bench")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sharded_embedding.json"))
    parser.add_argument("--chief", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--layer", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.chief:
        chief(int(args.rows), args.layer, args.steps, args.warmup, args.out, args.optimizer)
        return 0
    import results_file  # pylint: disable=import-outside-toplevel  # benchmarks/results_file.py

    rows_out = []
    for rows in [int(r) for r in args.rows.split(",")]:
        for layer in args.layers.split(","):
            row = run_variant(rows, layer, args)
            rows_out.append(row)
            print(f"{layer:16s} {rows:>11,} rows: {row['ms_per_step']:8.2f} ms/step, ps peak RSS "
                  f"{row['ps_peak_rss_mb']} MB, shards {[s[1] for s in row['shards']]} ({row['seconds']} s)", flush=True)
    results_file.write(args.out, rows_out)
    print("\n| rows | layer | optimizer | ms per step | ps:0 / ps:1 peak RSS MB |\n|---|---|---|---|---|")
    for r in rows_out:
        print(f"| {r['rows']:,} | {r['layer']} | {r['optimizer']} | {r['ms_per_step']:.2f} | {r['ps_peak_rss_mb'][0]:,.0f} / "
              f"{r['ps_peak_rss_mb'][1]:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
