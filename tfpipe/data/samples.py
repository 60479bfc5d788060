"""Small data sets written the way users have them, for the configs in configs/ and the tests.

- `breast_cancer`: scikit-learn's breast cancer table (569 rows, 30 float
  columns) as CSV files with a string label column `diagnosis`
  (`benign`/`malignant`), a string column `site`, an id column, and about
  3% of the cells of five columns left empty.
- `diabetes`: scikit-learn's diabetes table (442 rows, 10 columns in their
  original units) with the float regression target `progression`.
- `colours`: an image folder, two classes (`red`, `blue`) of noisy colour
  patches as JPEG, PNG, GIF and BMP files of 10-48 px, some grayscale, some
  RGBA or palette images, in nested folders below each class folder.

All are deterministic from `seed` and need no download (scikit-learn ships
its tables). Each writes `train`, `validation` (not `colours`: its config
cuts one from the training folder) and `test` splits under `out_dir`.

Example:

```python
samples.breast_cancer("data/breast_cancer")   # data/breast_cancer/{train,validation,test}.csv
```
"""

from __future__ import annotations

import csv
import os

import numpy as np

SPLIT_FRACTIONS = (("train", 0.7), ("validation", 0.1), ("test", 0.2))


def _split_rows(n: int, seed: int) -> dict:
    order = np.random.default_rng(seed).permutation(n)
    out, start = {}, 0
    for name, fraction in SPLIT_FRACTIONS:
        stop = n if name == SPLIT_FRACTIONS[-1][0] else start + int(round(n * fraction))
        out[name] = order[start:stop]
        start = stop
    return out


def _write_csv(out_dir: str, header: list, rows: list, seed: int) -> dict:
    os.makedirs(out_dir, exist_ok=True)
    counts = {}
    for split, idx in _split_rows(len(rows), seed).items():
        with open(os.path.join(out_dir, f"{split}.csv"), "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows[i] for i in idx)
        counts[split] = len(idx)
    return counts


def _name(feature: str) -> str:
    return feature.replace(" ", "_")


def breast_cancer(out_dir: str, seed: int = 0, missing: float = 0.03) -> dict:
    """Writes `{train,validation,test}.csv`; returns the row count per split."""
    from sklearn.datasets import load_breast_cancer  # pylint: disable=import-outside-toplevel

    bunch = load_breast_cancer()
    rng = np.random.default_rng(seed)
    names = [_name(f) for f in bunch.feature_names]
    holes = {n: rng.random(len(bunch.target)) < missing for n in names[:5]}
    header = ["patient_id", "site", *names, "diagnosis"]
    rows = []
    for i, (x, y) in enumerate(zip(bunch.data, bunch.target)):
        values = ["" if n in holes and holes[n][i] else f"{v:.6g}" for n, v in zip(names, x)]
        rows.append([f"P{i:04d}", rng.choice(["left", "right"]), *values, bunch.target_names[y]])
    return _write_csv(out_dir, header, rows, seed)


def diabetes(out_dir: str, seed: int = 0) -> dict:
    """Writes `{train,validation,test}.csv` with target `progression`; returns the row count per split."""
    from sklearn.datasets import load_diabetes  # pylint: disable=import-outside-toplevel

    bunch = load_diabetes(scaled=False)
    header = [*bunch.feature_names, "progression"]
    rows = [[f"{v:.6g}" for v in x] + [f"{y:g}"] for x, y in zip(bunch.data, bunch.target)]
    return _write_csv(out_dir, header, rows, seed)


# Bright red, dark blue: apart in grayscale too (luminance about 124 and 19).
_COLOURS = {"red": (250, 70, 70), "blue": (10, 10, 90)}
_FORMATS = (("JPEG", ".jpg"), ("PNG", ".png"), ("GIF", ".gif"), ("BMP", ".bmp"), ("JPEG", ".jpeg"))
_FOLDERS = ("", "2019", os.path.join("more", "deeper"))


def colours(out_dir: str, per_class: int = 60, seed: int = 0, test_per_class: int = 20) -> dict:
    """Writes `<out>/{train,test}/{red,blue}/.../*.{jpg,png,gif,bmp}`; returns the file count per split."""
    from PIL import Image  # pylint: disable=import-outside-toplevel

    rng = np.random.default_rng(seed)
    counts = {}
    for split, n in (("train", per_class), ("test", test_per_class)):
        counts[split] = 0
        for name, rgb in _COLOURS.items():
            for i in range(n):
                h, w = (int(v) for v in rng.integers(10, 49, 2))
                pixels = np.clip(np.asarray(rgb) + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
                image = Image.fromarray(pixels)
                mode = ("RGB", "RGB", "L", "RGBA", "P")[i % 5]
                image = image.convert(mode) if mode != "P" else image.convert("P", palette=Image.ADAPTIVE)
                fmt, ext = _FORMATS[(i + i // 5) % len(_FORMATS)]  # each format in 10 files, with every mode in 25
                if fmt == "JPEG" and mode in ("RGBA", "P"):
                    image = image.convert("RGB")  # JPEG has no alpha or palette
                if fmt == "BMP" and mode == "RGBA":
                    image = image.convert("RGB")
                folder = os.path.join(out_dir, split, name, _FOLDERS[i % len(_FOLDERS)])
                os.makedirs(folder, exist_ok=True)
                image.save(os.path.join(folder, f"{name}_{i:03d}{ext.upper() if i % 7 == 0 else ext}"), format=fmt)
                counts[split] += 1
            # What else lives in users' folders: not images, so not read.
            for junk in (".DS_Store", "notes.txt"):
                with open(os.path.join(out_dir, split, name, junk), "w", encoding="utf-8") as f:
                    f.write("not an image\n")
    return counts
