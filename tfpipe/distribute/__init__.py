"""Distribution: strategies from `runtime.strategy`, TF_CONFIG and devices,
batch arithmetic, chief-only outputs (`strategies.py`), and local
multi-process clusters behind `scripts/launch_local.py` (`launch.py`).
"""


def __getattr__(name):
    # `tfpipe.distribute` was one module before the layout split: its
    # functions (make_strategy, describe, ...) still resolve, from strategies.py.
    import importlib  # pylint: disable=import-outside-toplevel

    strategies = importlib.import_module("tfpipe.distribute.strategies")
    try:
        return getattr(strategies, name)
    except AttributeError:
        raise AttributeError(f"module 'tfpipe.distribute' has no attribute {name!r}") from None
