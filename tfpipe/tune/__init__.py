"""Tuners: experiments that change a config and measure it.

- `trials.py`: one trial = a short real training window of a config (plus
  overrides) in a child process; repeats, median, noise; a JSON store so an
  interrupted session resumes without repeating finished trials.
- `window.py`: what runs in the child (training windows, the CPU ceiling).
- `window.py` kinds `budget` (train N seconds, then validate) and
  `lr_range` (the learning-rate range test) serve the two tuners below.
- `pipeline.py`: the input-pipeline tuner (`scripts/tune.py pipeline`).
- `batch_size.py`: throughput per batch size up to the first out-of-memory
  size, then validation accuracy at equal wall time (`... batch_size`).
- `lr.py`: the learning-rate range test and a suggested rate and schedule (`... lr`).
- `sweep.py`: Optuna search over config keys, trials as `tfpipe train`
  processes, median pruning, resumable study, HParams dashboard (`... sweep`).
- `cli.py`: `scripts/tune.py MODE ...`, modes in a plain dict (`MODES`).

Nothing here imports TensorFlow at import time; trials run it in children.
"""
