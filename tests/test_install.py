"""The wheel, installed away from the checkout, used as a Colab user would.

Builds the wheel (`pip wheel --no-deps --no-build-isolation`: offline, and
TensorFlow is not reinstalled), checks that nothing but `tfpipe` lands at
the top of it and that it holds every package of the tree, installs it with
`pip install --no-deps --target`, and from a directory outside the
repository that holds a user's own `models.py`: runs the `tfpipe` console
command on the bundled default config, runs the README's bring-your-own
example verbatim (own Keras model on NumPy arrays and on a tf.data.Dataset),
and executes the quickstart notebook in a real kernel.
"""

import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).parents[1]
# TensorFlow's C++ lines look like "I0000 00:00:1796319668.808054   11042 file.cc:31] ..."
CPP_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d|All log messages before absl::InitializeLog|cuInit", re.M)
USER_MODELS = '''"""A user's own models.py, beside the notebook: must not shadow tfpipe.models."""
def check(*args):
    raise AssertionError("tfpipe imported the user's models.py")
'''


def _tree_packages() -> set:
    """Every package directory of the checkout, under its installed name."""
    found = {"tfpipe.models", "tfpipe.configs"}
    for init in (ROOT / "tfpipe").rglob("__init__.py"):
        rel = init.parent.relative_to(ROOT)
        if not any(os.path.islink(ROOT / Path(*rel.parts[: i + 1])) for i in range(len(rel.parts))):
            found.add(".".join(rel.parts))
    return found


def _build_wheel(tmp: Path) -> Path:
    src = tmp / "src"
    src.mkdir()
    for name in ("setup.cfg", "setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)

    def skip(folder, names):  # the worktree's tfpipe/models -> ../models symlinks, caches
        return [n for n in names if n == "__pycache__" or os.path.islink(os.path.join(folder, n))]

    for name in ("tfpipe", "models", "configs"):
        shutil.copytree(ROOT / name, src / name, ignore=skip)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                    "-q", "-w", str(tmp / "dist"), str(src)], check=True, timeout=300, capture_output=True)
    (wheel,) = (tmp / "dist").glob("tfpipe-*.whl")
    return wheel


def _screen(text: str) -> list:
    """Lines as a terminal or notebook shows them: a carriage return redraws the line."""
    return [line.rsplit("\r", 1)[-1] for line in text.replace("\r\n", "\n").split("\n") if line.rsplit("\r", 1)[-1].strip()]


@pytest.mark.slow
def test_wheel_installed_elsewhere_trains_from_command_api_and_notebook(tmp_path, monkeypatch):
    clock = time.monotonic()

    def lap(what):  # where the minutes go (pytest -s shows it)
        nonlocal clock
        print(f"{what}: {time.monotonic() - clock:.0f} s")
        clock = time.monotonic()

    wheel = _build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"tfpipe", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}
    packages = {os.path.dirname(n).replace("/", ".") for n in names if n.endswith("/__init__.py")}
    assert _tree_packages() <= packages, _tree_packages() - packages
    assert "tfpipe/configs/digits_mlp.yaml" in names

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(site),
                    str(wheel)], check=True, timeout=300, capture_output=True)
    user = tmp_path / "user"  # outside the repository, with its own models.py
    user.mkdir()
    (user / "models.py").write_text(USER_MODELS)
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL",)}
    env["PYTHONPATH"] = str(site)  # the installed copy only, not the checkout
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)

    # 1. The console command on the bundled default, briefly.
    cli = subprocess.run(
        [str(site / "bin" / "tfpipe"), "train", "--config", "digits_mlp", "--workdir", "cli", "--set", "train.epochs=2",
         "--set", "train.steps_per_epoch=5", "--set", "profile.enabled=false"],
        cwd=user, env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    assert cli.returncode == 0, cli.stderr[-3000:]
    assert "[tfpipe] done: test accuracy" in cli.stdout
    assert not CPP_LINE.search(cli.stdout + cli.stderr), (cli.stdout + cli.stderr)[:3000]
    assert (user / "cli" / "model.keras").exists()
    lap("wheel, install, console command")

    # 2. The README's bring-your-own example, verbatim.
    readme = (ROOT / "README.md").read_text()
    code = re.search(r"<!-- tested: bring-your-own -->\n```python\n(.*?)```", readme, re.S).group(1)
    (user / "example.py").write_text(code + "\nimport tfpipe.models\nassert tfpipe.__file__.startswith(%r)\n" % str(site))
    api = subprocess.run([sys.executable, "example.py"], cwd=user, env=env, capture_output=True, text=True,
                         timeout=600, check=False)
    assert api.returncode == 0, api.stderr[-3000:]
    printed = api.stdout.splitlines()
    assert "'accuracy'" in printed[-1] and "'loss'" in printed[-1]  # model.keras evaluates: it loads compiled
    assert not CPP_LINE.search(api.stdout + api.stderr), (api.stdout + api.stderr)[:3000]
    lap("README example")

    # 3. The quickstart notebook, with a short profiled run (report inline).
    # Short loop calls keep the profiler's unrolled loop (compiled once) small.
    monkeypatch.setenv("QUICKSTART_EPOCHS", "2")
    monkeypatch.setenv("QUICKSTART_SET", "train.steps_per_loop=5,profile.start_step=20,profile.num_steps=5")
    nb = nbformat.read(ROOT / "notebooks" / "quickstart.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(user)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    streams = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "<b>tfpipe run</b>" in html and "learning curve" in html and "bottleneck report" in html
    assert "verdict" in html
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 1  # result.plot() shown inline
    assert not CPP_LINE.search(streams), streams[:3000]
    assert len(_screen(streams)) <= 40, _screen(streams)
    assert "test accuracy" in streams and "predicted" in streams
    assert list(user.glob("runs/mlp-*/learning_curve.png"))
    lap("notebook")
