"""Measures a config's input pipeline alone (no model): end to end and per stage.

    tfpipe benchmark_input --config configs/clicks_widedeep.yaml [--batches 200] [--out result.json]

Warm-up batches are dropped; each stage is timed by cutting the pipeline after it.
"""

import json
import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("config", None, "YAML config file, or the name of a shipped config (digits_mlp).", required=True)
flags.DEFINE_integer("batches", 200, "Batches timed after the warm-up.")
flags.DEFINE_integer("warmup", 10, "Batches pulled and dropped before timing.")
flags.DEFINE_bool("stages", True, "Also time the pipeline cut after each stage.")
flags.DEFINE_multi_string("set", [], "Override a config key: --set data.map.vectorized=false (repeatable).")
flags.DEFINE_string("out", None, "Write the JSON result here too.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    import tfpipe  # pylint: disable=import-outside-toplevel

    try:
        cfg = tfpipe.load_config(FLAGS.config, overrides=FLAGS.set)
    except tfpipe.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from tfpipe.data import benchmark  # pylint: disable=import-outside-toplevel

    result = {"config": FLAGS.config, "overrides": FLAGS.set,
              **benchmark.run(cfg, FLAGS.batches, FLAGS.warmup, FLAGS.stages)}
    e2e = result["end_to_end"]
    print(f"end to end: {e2e['examples_per_sec']:.0f} examples/sec ({e2e['examples']} examples in {e2e['seconds']:.2f}s)")
    for s in result.get("stages", []):
        print(f"  after {s['stage']:<17} {s['examples_per_sec']:>12.0f} examples/sec")
    print(f"peak RSS {result['peak_rss_mb']} MiB")
    if FLAGS.out:
        with open(FLAGS.out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    else:
        print(json.dumps(result))
    return 0

