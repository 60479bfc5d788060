"""Profiling: the trace window and step markers, the always-on input-wait
timer, the headless bottleneck report, on-demand capture, and reading a
run's TensorBoard scalars back.

- `trace.py`: `Profiler` (one trace window, step markers) and `InputWaitTimer`.
- `report.py`: the verdict and `report.json` / `report.png` from a trace.
- `waiting.py`: how long each step waited for its batch, from the raw trace.
- `capture_server.py`: on-demand capture from a running job over loopback HTTP.
- `summaries.py`: `read_scalars(logdir)`.
"""
