"""TensorFlow's own start-up logging, quiet by default in library and CLI alike.

On a CPU machine TensorFlow 2.21 prints, before any training: a
`cudart_stub` line twice, each after absl's "All log messages before
absl::InitializeLog()" notice, a red `failed call to cuInit` error, and the
CPU-feature banner. Some of these ignore `TF_CPP_MIN_LOG_LEVEL` (they come
through absl's C++ logging, not TensorFlow's), so setting the variable alone
is not enough.

`install()` (called by `import tfpipe`) therefore:

- sets `TF_CPP_MIN_LOG_LEVEL=2` unless it is set already (hides C++ INFO
  and WARNING lines, such as the profiler's `I0000` lines; errors still show);
- when TensorFlow is imported later (by tfpipe or by the user), runs that
  import and the device discovery behind it with file descriptor 2 sent to
  a temporary file, then writes back every line except the known start-up
  noise (`NOISE`). Anything else TensorFlow prints there still shows.

It costs nothing after start-up. `TFPIPE_TF_LOGS=1` turns all of it off and
shows TensorFlow's logging as TensorFlow prints it. If TensorFlow was
imported before tfpipe, its import lines have been printed already; the
calls that print later (device set-up, profiler sessions) run behind
`filtered_stderr` too, so their lines stay out either way.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import os
import re
import sys
import tempfile

ENV = "TFPIPE_TF_LOGS"

# Lines TensorFlow prints on every CPU-only start; nothing a user can act on.
NOISE = re.compile(
    r"All log messages before absl::InitializeLog|cudart_stub\.cc|cuda_platform\.cc.*cuInit|failed call to cuInit"
    r"|cpu_feature_guard\.cc|rebuild TensorFlow with the appropriate compiler flags"
    r"|oneDNN custom operations are on|TF_ENABLE_ONEDNN_OPTS|Unable to register cu(?:DNN|FFT|BLAS) factory"
    r"|computation placer already registered|TF-TRT Warning"
    # glog INFO lines (the profiler's I0000 session lines): printed when
    # TensorFlow was imported before tfpipe, so its log level was read already.
    r"|^I\d{4} \d\d:\d\d:\d\d"
)


def verbose() -> bool:
    """True when the user asked for TensorFlow's own logging (`TFPIPE_TF_LOGS=1`)."""
    return os.environ.get(ENV, "").strip().lower() not in ("", "0", "false", "no")


@contextlib.contextmanager
def filtered_stderr():
    """Sends fd 2 to a temporary file for the block, then writes back all but `NOISE`."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2 (some embedded interpreters)
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode("utf-8", errors="replace")
            kept = "".join(line for line in text.splitlines(True) if not NOISE.search(line))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


def quiet():
    """`filtered_stderr()`, or nothing when the user asked for TensorFlow's logging."""
    return contextlib.nullcontext() if verbose() else filtered_stderr()


class _QuietImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds `tensorflow` once, and imports it (plus device discovery) behind `filtered_stderr`."""

    def __init__(self):
        self._spec = None

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "tensorflow" or self._spec is not None:
            return None
        sys.meta_path.remove(self)  # once: later lookups go to the ordinary finders
        import importlib.util  # pylint: disable=import-outside-toplevel

        spec = importlib.util.find_spec("tensorflow")
        if spec is None or spec.loader is None:
            return None
        self._spec = spec
        spec.loader, self._loader = self, spec.loader
        return spec

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        with filtered_stderr():
            self._loader.exec_module(module)
            # cuInit runs at the first device query, not at import: do it now,
            # inside the filter. Listing physical devices leaves logical-device
            # and thread settings open (tests/conftest.py relies on it too).
            try:
                module.config.list_physical_devices()
            except Exception:  # pylint: disable=broad-except  # a broken install fails at the next real call
                pass


def install() -> None:
    """Quiets TensorFlow's start-up logging unless `TFPIPE_TF_LOGS=1`; see the module docstring."""
    if verbose():
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules or any(isinstance(f, _QuietImport) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _QuietImport())
