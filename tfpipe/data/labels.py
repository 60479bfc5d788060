"""The class names of a run whose labels are strings, saved with it as `WORKDIR/labels.json`.

A CSV label column read as strings ("benign", "malignant") is mapped to
class ids by `tfpipe.data.sources` from the training split's sorted names;
the model's output i is the i-th name. The file records that mapping for
whoever reads the predictions (`{"column": ..., "labels": [...]}`), and a
resumed run checks that its training split still gives the same names.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tfpipe.config import ConfigError
from tfpipe.data import sources

FILE = "labels.json"


def names(data_cfg) -> tuple | None:
    """The class names, id i = names[i]; None when the labels are not strings."""
    try:
        return sources.string_labels(data_cfg)
    except (FileNotFoundError, ValueError):
        return None  # preflight names the problem in its own words


def save(data_cfg, outdir: str | os.PathLike) -> Path | None:
    """Writes `outdir/labels.json` for string labels (None otherwise).

    Raises:
        ConfigError: `outdir` holds a labels.json of an earlier run with other
            names (the training data changed under a resumed run: its ids
            would mean other classes).
    """
    labels = names(data_cfg)
    if labels is None:
        return None
    path = Path(outdir) / FILE
    record = {"column": data_cfg.csv.label_column, "labels": list(labels)}
    if path.exists():
        before = json.loads(path.read_text(encoding="utf-8"))
        if before.get("labels") != record["labels"]:
            raise ConfigError(
                f"{path}: the run was trained with labels {before.get('labels')}, but the training split now "
                f"gives {record['labels']}; class ids would change meaning: train in a new workdir"
            )
        return path
    path.write_text(json.dumps(record, indent=1), encoding="utf-8")
    return path


def load(workdir: str | os.PathLike) -> list | None:
    """The class names saved with a run, or None if it has none."""
    path = Path(workdir) / FILE
    return json.loads(path.read_text(encoding="utf-8"))["labels"] if path.exists() else None
