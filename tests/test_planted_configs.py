"""The planted bottlenecks as tfpipe configs (benchmarks/planted/*.yaml).

Each config plants one case of tfpipe/profile/planted.py in a tfpipe run
(its data named by import path from tfpipe/profile/planted_data.py, the
misconfiguration a config key). Trained by tfpipe's own loop with the
profiler on, the run's report.json must name the case's true cause, call it
input-bound or not, and recommend first the config key that fixes it.
Short runs here (one epoch, the window opened right after the compiling
call); the configs as shipped run a few epochs.
"""

import json
from pathlib import Path

import pytest

import tfpipe
from tfpipe.profile import planted

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "benchmarks" / "planted"
# One epoch of 60 steps holds the whole window: a compiled call, a warm-up
# piece and 20 markers of 2 steps (profile.num_steps 40), plus edge markers.
SHORT = ["train.epochs=1", "train.steps_per_epoch=60", "profile.start_step=0", "profile.num_steps=40"]


@pytest.fixture(autouse=True)
def _records_in_a_test_folder(tmp_path_factory, monkeypatch):
    # slow_reads writes its TFRecord files once per folder: one for this session, not the system's temp.
    folder = tmp_path_factory.getbasetemp() / "planted-records"
    monkeypatch.setenv("TFPIPE_PLANTED_DIR", str(folder))


def test_one_config_per_case_each_stating_its_command_and_result():
    assert sorted(p.stem for p in FOLDER.glob("*.yaml")) == sorted(planted.CASES)
    for name in planted.CASES:
        text = (FOLDER / f"{name}.yaml").read_text()
        assert text.startswith(f'# Planted '), name
        assert f"scripts/train.py --config benchmarks/planted/{name}.yaml" in text, name
        assert "# Expect:" in text, name
        assert planted.CASES[name].cause in text, name  # the result to expect names the cause
        tfpipe.load_config(FOLDER / f"{name}.yaml")  # every key and import path valid


@pytest.mark.parametrize("name", list(planted.CASES))
def test_planted_config_report_names_the_cause_and_first_fix(name, tmp_path):
    case = planted.CASES[name]
    cfg = tfpipe.load_config(FOLDER / f"{name}.yaml", overrides=SHORT)
    tfpipe.train(cfg, tmp_path / "run")
    rep = json.loads((tmp_path / "run" / "report.json").read_text())
    summary = f"{rep['verdict_text']} | {rep['cause_text']} | {rep['recommendations'][:2]}"
    assert rep["markers"] >= 18, summary
    if case.input_bound:
        assert rep["verdict"] != "not-input-bound", summary
    else:
        assert rep["verdict"] != "highly-input-bound", summary
    assert rep["cause"] == case.cause, summary
    # The first recommendation is the key that fixes the case (None: only a
    # note, the compute-bound model has no data key to change).
    first = rep["recommendations"][0]
    assert first["key"] == case.fix, summary
    if case.fix:
        # Applicable as an override to the same config.
        tfpipe.load_config(FOLDER / f"{name}.yaml", overrides=[f"{first['key']}={json.dumps(first['value'])}"])


# How much faster the first recommendation makes each run is measured in
# benchmarks/diagnosis.py (BENCHMARKS.md, "Diagnosis"), side by side in
# interleaved rounds: a speed-up asserted here would be a timed test on a
# shared machine.
