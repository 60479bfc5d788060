"""Exports a finished run as a SavedModel for serving, in TensorFlow Serving's layout.

    python scripts/export.py --workdir RUN [--version N] [--name NAME]   # -> RUN/export/<name>/<version>/

The `serving_default` signature takes raw inputs (pixels, CSV columns, encoded
image bytes) and runs the config's deterministic preprocessing in the graph.
"""

import os
import sys

# Before TensorFlow loads: hide its C++ INFO banner lines.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from tfpipe.serve import export  # noqa: E402

if __name__ == "__main__":
    sys.exit(export.main(sys.argv[1:]))
