"""Distribution: strategies from `runtime.strategy`, TF_CONFIG and devices,
batch arithmetic, chief-only outputs (`strategies.py`), and local
multi-process clusters behind `scripts/launch_local.py` (`launch.py`).
"""
