"""The two benchmark workloads, generated on disk, deterministic from a seed.

- `images`: ~256x256 JPEGs in 10 classes: the embedded 8x8 digits upscaled,
  tinted, shifted and noised, written as an image folder
  (`<out>/folder/{train,test}/<class>/`) and as TFRecord shards
  (`<out>/tfrecord/{train,test}-*.tfrecord` + `spec.json`).
- `clicks`: a click log in the spirit of Criteo: a binary label, 13 numeric
  columns `I1..I13` (heavy-tailed counts, some missing) and 26 categorical
  columns `C1..C26` (hex ids with skewed frequencies), in several CSV files
  (`<out>/train-*.csv`, `<out>/test-00000.csv`). The label depends on a few
  numeric and categorical columns, so a model can learn it.

Example:

```python
workloads.images("data/images", num_images=10_000)
workloads.clicks("data/clicks", rows=1_000_000)
```
"""

from __future__ import annotations

import io
import os

import numpy as np

NUM_NUMERIC = 13
NUM_CATEGORICAL = 26


def _digit_image(digit8x8: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image  # pylint: disable=import-outside-toplevel

    # Upscale the 0..16 digit to ~70% of the canvas, place it at a random offset.
    inner = int(size * rng.uniform(0.55, 0.8))
    glyph = Image.fromarray((digit8x8 * (255 / 16)).astype(np.uint8)).resize((inner, inner), Image.BILINEAR)
    glyph = np.asarray(glyph, np.float32) / 255.0
    canvas = np.zeros((size, size), np.float32)
    top, left = rng.integers(0, size - inner + 1, 2)
    canvas[top : top + inner, left : left + inner] = glyph
    fg = rng.uniform(0.5, 1.0, 3)
    bg = rng.uniform(0.0, 0.4, 3)
    img = bg + canvas[..., None] * (fg - bg)
    img += rng.normal(0, 0.08, img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def images(out_dir: str, num_images: int = 10_000, size: int = 256, seed: int = 0, num_shards: int = 8,
           test_fraction: float = 0.1, log=print) -> dict:
    """Writes the images workload; returns its paths and counts.

    Args:
        out_dir: created if needed; `folder/` and `tfrecord/` go inside.
        num_images: total over train and test.
        size: side of the square JPEGs.
        seed: everything (digit choice, placement, colours, noise) follows it.
        num_shards: TFRecord shards per split (test gets max(1, num_shards // 4)).
        test_fraction: share of the images in the test split.
    """
    from PIL import Image  # pylint: disable=import-outside-toplevel

    from tfpipe.data import tfrecords  # pylint: disable=import-outside-toplevel
    from tfpipe.data.sources import _digits_arrays  # pylint: disable=import-outside-toplevel

    x, y = _digits_arrays()
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(x), num_images)
    n_test = int(round(num_images * test_fraction))
    folder = os.path.join(out_dir, "folder")
    for i, k in enumerate(picks):
        split = "test" if i < n_test else "train"
        d = os.path.join(folder, split, str(int(y[k])))
        os.makedirs(d, exist_ok=True)
        buf = io.BytesIO()
        Image.fromarray(_digit_image(x[k].reshape(8, 8), size, rng)).save(buf, format="JPEG", quality=90)
        with open(os.path.join(d, f"{i:06d}.jpg"), "wb") as f:
            f.write(buf.getvalue())
        if log and (i + 1) % 2000 == 0:
            log(f"images: {i + 1}/{num_images}")
    for split in ("train", "test"):
        os.makedirs(os.path.join(folder, split), exist_ok=True)
        for c in range(10):  # every class folder exists, even if tiny runs miss a class
            os.makedirs(os.path.join(folder, split, str(c)), exist_ok=True)
    record_dir = os.path.join(out_dir, "tfrecord")
    spec = tfrecords.from_image_folder(os.path.join(folder, "train"), record_dir, num_shards, "train", seed)
    if n_test:
        tfrecords.from_image_folder(os.path.join(folder, "test"), record_dir, max(1, num_shards // 4), "test", seed)
    return {"folder": folder, "tfrecord": record_dir, "spec": spec, "train": num_images - n_test, "test": n_test}


def clicks(out_dir: str, rows: int = 1_000_000, num_files: int = 8, seed: int = 0, test_fraction: float = 0.1,
           log=print) -> dict:
    """Writes the clicks workload as CSV files; returns paths and counts.

    Args:
        out_dir: created if needed.
        rows: total rows over train and test.
        num_files: training CSV files (the test split is one file).
        seed: every value follows it.
        test_fraction: share of the rows in the test file.
    """
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(seed)
    vocab_sizes = np.unique(np.geomspace(4, 50_000, NUM_CATEGORICAL).astype(int))
    vocab_sizes = np.resize(vocab_sizes, NUM_CATEGORICAL)
    # Hidden ground truth: weights on a few numeric columns and per-id effects
    # on a few categorical ones.
    w_num = np.zeros(NUM_NUMERIC)
    w_num[[0, 2, 5, 8]] = [0.6, -0.5, 0.4, 0.3]
    effects = {c: rng.normal(0, 1.2, vocab_sizes[c]) for c in (0, 3, 7, 12, 20)}
    n_test = int(round(rows * test_fraction))
    sizes = [n_test] + [len(a) for a in np.array_split(np.arange(rows - n_test), num_files)]
    names = ["test-00000.csv"] + [f"train-{i:05d}.csv" for i in range(num_files)]
    header = ",".join(["label"] + [f"I{i + 1}" for i in range(NUM_NUMERIC)] + [f"C{i + 1}" for i in range(NUM_CATEGORICAL)])
    positives = 0
    for name, n in zip(names, sizes):
        num = np.floor(rng.lognormal(1.0, 1.3, (n, NUM_NUMERIC))).astype(np.int64)
        # Skewed (Zipf-like) ids: a few values are very frequent, as in click logs.
        ids = np.stack(
            [np.minimum(rng.zipf(1.3, n) - 1, v - 1) for v in vocab_sizes], axis=1
        )
        logit = -1.6 + (np.log1p(num) - 1.2) @ w_num
        for c, eff in effects.items():
            logit += eff[ids[:, c]]
        label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
        positives += int(label.sum())
        missing = rng.random(n) < 0.02  # I1 and C1 are sometimes absent
        cols = [label.astype(str)]
        for j in range(NUM_NUMERIC):
            s = num[:, j].astype(str)
            if j == 0:
                s = np.where(missing, "", s)
            cols.append(s)
        for c in range(NUM_CATEGORICAL):
            # Hex ids like Criteo's hashed categories; the column mixes in so equal ids differ per column.
            s = np.char.mod("%08x", (ids[:, c] * 2654435761 + c * 97531) % (1 << 32))
            if c == 0:
                s = np.where(missing, "", s)
            cols.append(s)
        with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
            f.write(header + "\n")
            f.write("\n".join(",".join(row) for row in zip(*[c.tolist() for c in cols])))
            f.write("\n")
        if log:
            log(f"clicks: wrote {name} ({n} rows)")
    return {
        "dir": out_dir,
        "train": rows - n_test,
        "test": n_test,
        "positive_rate": positives / rows,
    }
