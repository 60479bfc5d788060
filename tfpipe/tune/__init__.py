"""Tuners: experiments that change a config and measure it.

- `trials.py`: one trial = a short real training window of a config (plus
  overrides) in a child process; repeats, median, noise; a JSON store so an
  interrupted session resumes without repeating finished trials.
- `window.py`: what runs in the child (training windows, the CPU ceiling).
- `pipeline.py`: the input-pipeline tuner (`scripts/tune.py pipeline`).
- `cli.py`: `scripts/tune.py MODE ...`, modes in a plain dict (`MODES`).

Nothing here imports TensorFlow at import time; trials run it in children.
"""
