"""The bottleneck report on planted bottlenecks (tfpipe/profile/planted.py).

Each case is a plain TensorFlow program with root step markers, slow for one
known reason; the report must call it input-bound or not, name the cause and
make its first recommendation the config key that fixes it. Small versions
here (a few seconds each); the full ones, with the fix and the perfect-input
speed-up measured, are benchmarks/diagnosis.py.
"""

import pytest

from tfpipe.profile import planted, report


@pytest.mark.parametrize("name", list(planted.CASES))
def test_planted_case_verdict_cause_and_first_fix(name, tmp_path):
    case = planted.CASES[name]
    # The in-run perfect-input probe on one case (it adds a second or two); the
    # rest give the estimate from the waiting share.
    probe = name == "python_generator"
    result = planted.diagnose(case, tmp_path, scale=0.25, markers=20, steps_per_call=min(2, case.steps_per_call),
                              probe=probe)
    rep = result["report"]
    assert rep["markers"] >= 18, rep["markers"]  # xprof drops a session's edge markers
    # Input-bound cases at least moderately; the others never highly (a
    # one-step call's iterator hand-over can read a few percent either side of 5%).
    if case.input_bound:
        assert rep["verdict"] != "not-input-bound", rep["verdict_text"]
    else:
        assert rep["verdict"] != "highly-input-bound", rep["verdict_text"]
    assert rep["cause"] == case.cause, rep["cause_text"]
    assert rep["cause"] in report.CAUSES
    first = rep["recommendations"][0]
    assert set(first) == {"key", "value", "current", "why"}
    assert first["key"] == case.fix, rep["recommendations"]
    if probe:
        # Measured: the program's own loop on one cached batch, then on its input.
        assert rep["perfect_input_source"] == "measured"
        blocks = rep["perfect_input"]["blocks_ms_per_step"]
        assert len(blocks["perfect"]) == len(blocks["input"]) == 3
        # A Python generator under the GIL against one cached batch: many times
        # slower (about 20x at full scale), far beyond any timing noise.
        assert rep["perfect_input_speedup"] > 2, rep["perfect_input"]
    else:
        # The estimate: the share a perfect input would save.
        assert rep["perfect_input_source"] == "estimate"
        assert rep["perfect_input_speedup"] == pytest.approx(1 / (1 - rep["input_share"]))
    # Stages are ranked by their own work; a Prefetch buffer's waiting is none.
    assert all(s["stage"] != "Prefetch" for s in rep["slowest_input_stages"])
