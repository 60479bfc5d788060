"""What `tfpipe.train` returns: metrics, history, the trained model, the workdir, the report.

A `Result` reads like the metrics dict it used to be (`result["accuracy"]`,
`dict(result)`), and carries the rest as attributes:

```python
result = tfpipe.train(cfg)
result["accuracy"], result.history[-1]["val_loss"]
result.model.predict(x)            # the trained keras.Model, ready now
result.plot()                      # learning curve, a matplotlib Figure
result                             # in a notebook: metrics, curve and bottleneck report inline
```

Figures are drawn on `matplotlib.figure.Figure` objects, never through
pyplot, so no backend or other global matplotlib state changes.
"""

from __future__ import annotations

import base64
import collections.abc
import html
import io
import json
from pathlib import Path


class Result(collections.abc.Mapping):
    """The outcome of one run.

    Attributes:
        metrics: final evaluation and throughput (also `workdir/metrics.json`).
        history: one dict per epoch: epoch, step, loss, accuracy, val_loss,
            val_accuracy, examples_per_sec (also `workdir/history.json`).
        model: the trained `keras.Model`.
        workdir: the run directory (`pathlib.Path`).
        report: the bottleneck report dict (`workdir/report.json`), or None
            when the run was not profiled.
    """

    def __init__(self, metrics: dict, history: list, model, workdir, report: dict | None):
        self.metrics, self.history, self.model = dict(metrics), list(history), model
        self.workdir, self.report = Path(workdir), report

    @classmethod
    def load(cls, workdir, model=None) -> "Result":
        """The result of a finished run from its files; `model` defaults to `model.keras`."""
        workdir = Path(workdir)

        def read(name, default):
            path = workdir / name
            return json.loads(path.read_text(encoding="utf-8")) if path.exists() else default

        if model is None and (workdir / "model.keras").exists():
            import keras  # pylint: disable=import-outside-toplevel

            try:
                model = keras.models.load_model(workdir / "model.keras")
            except Exception as e:  # pylint: disable=broad-except  # e.g. a subclassed model's class is unknown here
                why = " ".join(str(e).split())[:200]
                print(f"[tfpipe] {workdir / 'model.keras'} did not load ({type(e).__name__}: {why}); "
                      "to load it, register the model's class with keras.saving.register_keras_serializable", flush=True)
        return cls(read("metrics.json", {}), read("history.json", []), model, workdir, read("report.json", None))

    # -- the metrics dict
    def __getitem__(self, key):
        return self.metrics[key]

    def __iter__(self):
        return iter(self.metrics)

    def __len__(self):
        return len(self.metrics)

    def __repr__(self) -> str:
        shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.metrics.items() if k != "weights_sha256"}
        return f"Result({shown}, epochs={len(self.history)}, workdir={str(self.workdir)!r})"

    # -- pictures
    def plot(self):
        """Loss and accuracy per epoch, training and validation: a `matplotlib.figure.Figure`."""
        fig = _figure(figsize=(10, 3.5))
        axes = fig.subplots(1, 2)
        epochs = [h["epoch"] for h in self.history]
        for ax, name in zip(axes, ("loss", "accuracy")):
            for prefix, label in (("", "train"), ("val_", "validation")):
                values = [h.get(prefix + name) for h in self.history]
                if any(v is not None for v in values):
                    ax.plot(epochs, values, label=label, marker="." if len(epochs) < 30 else None)
            ax.set(xlabel="epoch", ylabel=name)
            ax.legend()
        fig.tight_layout()
        return fig

    def _repr_html_(self) -> str:
        """Notebook display: the metrics, the learning curve and the bottleneck report."""
        rows = "".join(
            f"<tr><td>{html.escape(k)}</td><td>{html.escape(_fmt(v))}</td></tr>"
            for k, v in self.metrics.items() if k != "weights_sha256"
        )
        parts = [f"<b>tfpipe run</b> <code>{html.escape(str(self.workdir))}</code>", f"<table>{rows}</table>"]
        if self.history:
            parts.append(_png_tag(_png(self.plot()), "learning curve"))
        if self.report:
            from tfpipe.profile import report as report_lib  # pylint: disable=import-outside-toplevel

            parts.append(f"<pre>{html.escape(report_lib.summary(self.report))}</pre>")
            chart = Path(self.report.get("chart") or "")
            if chart.is_file():
                parts.append(_png_tag(chart.read_bytes(), "bottleneck report"))
        return "<div>" + "".join(parts) + "</div>"


def read_history(workdir, up_to_step: int) -> list:
    """The epochs of `workdir/history.json` up to `up_to_step` (what a resumed run keeps)."""
    path = Path(workdir) / "history.json"
    if not up_to_step or not path.exists():
        return []
    return [h for h in json.loads(path.read_text(encoding="utf-8")) if h["step"] <= up_to_step]


def write_history(workdir, history: list) -> None:
    """Writes `workdir/history.json` (replaced whole: a kill mid-write leaves the old one)."""
    path = Path(workdir) / "history.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(history, indent=1), encoding="utf-8")
    tmp.replace(path)


def _figure(**kwargs):
    """A `matplotlib.figure.Figure` that a notebook shows as PNG even without pyplot.

    IPython's inline display of figures is switched on by pyplot; a Figure
    made without it would show as `<Figure size ...>` text, so this one
    carries its own `_repr_png_`.
    """
    from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel

    class ShownFigure(Figure):
        def _repr_png_(self):
            return _png(self)

    return ShownFigure(**kwargs)


def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return buf.getvalue()


def _png_tag(data: bytes, alt: str) -> str:
    return f'<img alt="{alt}" src="data:image/png;base64,{base64.b64encode(data).decode()}"/>'
