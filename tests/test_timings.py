"""Per-stage seconds: a stage's clock splits its wall time into parts and writes them; the report lists them."""

from __future__ import annotations

import json
import time

import pytest

from mim.stages.report import timings_section
from mim.tracking.timings import PARTS, read_timings, stage_clock, timed


def test_stage_clock_writes_its_parts_and_the_report_lists_every_stage(tmp_path, caplog):
    folder = tmp_path / "metrics/timings"
    with stage_clock("evaluate@mae", folder) as clock:
        with timed("data_s"):
            time.sleep(0.05)
        with timed("mlflow_s"), timed("data_s"):  # nested: counted once, in the outer part
            time.sleep(0.03)
        time.sleep(0.02)  # compute
    t = json.loads((folder / "evaluate@mae.json").read_text())
    assert t["stage"] == "evaluate@mae" and clock.stage == "evaluate@mae"
    assert 0.05 <= t["data_s"] < 0.5 and 0.03 <= t["mlflow_s"] < 0.5 and t["compute_s"] >= 0.02  # slack: shared CPUs
    assert t["wall_s"] == pytest.approx(sum(t[p] for p in PARTS), abs=0.01)  # the parts add up to the wall time
    assert t["startup_s"] > 0  # this process started before the stage did

    with pytest.raises(RuntimeError), stage_clock("pretrain@mae", folder):  # a failed stage writes nothing
        raise RuntimeError("stage failed")
    with timed("data_s"):  # outside a stage: nothing recorded, nothing raised
        pass
    with pytest.raises(ValueError, match="timing part 'gpu_s'"), stage_clock("x", folder), timed("gpu_s"):
        pass

    (folder / "pixels.json").write_text(json.dumps({"stage": "pixels", "wall_s": 12.0, "startup_s": 4.0,
                                                    "data_s": 0.0, "mlflow_s": 2.0, "compute_s": 6.0, "cpu_s": 11.0}))
    (folder / "broken.json").write_text("{not json")
    timings = read_timings(folder)
    assert list(timings) == ["evaluate@mae", "pixels"] and "broken.json" in caplog.text
    lines = timings_section(timings).splitlines()
    assert "## Per-stage seconds" in lines and "| pixels | 12.0 | 4.0 | 0.0 | 2.0 | 6.0 | 11.0 |" in lines
    total = next(line for line in lines if line.startswith("| total (2 stages)"))
    assert float(total.split("|")[2]) == pytest.approx(12.0 + t["wall_s"], abs=0.06)
    assert timings_section({}) == ""  # no timings recorded: no section
