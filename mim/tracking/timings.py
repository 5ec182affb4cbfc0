"""Per-stage seconds: where a `mim <stage>` process's wall time went, written to `metrics/timings/<stage>.json`.

Parts: `startup_s` (from the process's creation to the stage's start: the interpreter, `mim.cli`, the stage module's
imports: torch, timm, faiss), `data_s` (opening data/prepared), `mlflow_s` (the MLflow calls the stage waits for:
importing mlflow and connecting to its store, the run's start, the final flush and end), `compute_s` (the rest, with
what it imports on first use: matplotlib, torch's compiler stack at the first optimizer step) and `cpu_s` (CPU
seconds of all the process's threads). dvc's own start-up before it runs the command is not in them
(docs/benchmarks.md measures it). `mim report` lists them (`timings_section` in mim/stages/report.py).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mim.io import write_text

log = logging.getLogger("mim")
TIMINGS_DIR = Path("metrics/timings")
PARTS = ("startup_s", "data_s", "mlflow_s", "compute_s")


def process_age_s() -> float:
    """Seconds since this process was created (the interpreter's start-up included)."""
    import psutil  # a dependency of mim (pyproject.toml)

    return max(0.0, time.time() - psutil.Process().create_time())


class StageClock:
    """The wall time of one stage run, split into `PARTS`; `part(name)` adds the seconds of its block to `name`."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.startup_s = process_age_s()
        self._t0, self._cpu0 = time.perf_counter(), time.process_time()
        self.parts = {"data_s": 0.0, "mlflow_s": 0.0}
        self._open: str | None = None

    @contextmanager
    def part(self, name: str) -> Iterator[None]:
        if name not in self.parts:
            raise ValueError(f"timing part {name!r}: not one of {', '.join(self.parts)}")
        if self._open is not None:  # nested: the outer part already counts these seconds
            yield
            return
        self._open, start = name, time.perf_counter()
        try:
            yield
        finally:
            self.parts[name] += time.perf_counter() - start
            self._open = None

    def result(self) -> dict[str, float | str]:
        """Seconds so far: wall = start-up + the stage's own time; compute = what the other parts leave."""
        own = time.perf_counter() - self._t0
        compute = max(0.0, own - sum(self.parts.values()))
        values = {"wall_s": self.startup_s + own, "startup_s": self.startup_s, **self.parts, "compute_s": compute,
                  "cpu_s": time.process_time() - self._cpu0}
        return {"stage": self.stage, **{k: round(v, 3) for k, v in values.items()}}

    def write(self, folder: Path = TIMINGS_DIR) -> Path:
        path = folder / f"{self.stage}.json"
        write_text(str(path), json.dumps(self.result(), indent=2) + "\n")
        return path


_current: StageClock | None = None


@contextmanager
def stage_clock(stage: str, folder: Path = TIMINGS_DIR) -> Iterator[StageClock]:
    """Time stage `stage` (its dvc.yaml name: `pretrain@mae`, `baseline@mae`, `pixels`) and, when it succeeds, write
    `<folder>/<stage>.json` (on global rank 0 only)."""
    global _current
    previous, _current = _current, StageClock(stage)
    clock = _current
    try:
        yield clock
        if os.environ.get("RANK", "0") == "0":
            clock.write(folder)
    finally:
        _current = previous


@contextmanager
def timed(part: str) -> Iterator[None]:
    """Count the block's seconds as `part` (`data_s`, `mlflow_s`) of the running stage's clock; nothing without one."""
    if _current is None:
        yield
        return
    with _current.part(part):
        yield


def read_timings(folder: Path) -> dict[str, dict]:
    """`{stage: timings}` of every `<folder>/*.json`; a file that is not valid timings is left out with a warning."""
    found = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            values = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            values = err
        if isinstance(values, dict) and isinstance(values.get("wall_s"), int | float):
            found[path.stem] = values
        else:
            log.warning("%s: not a stage's timings (%s); left out of the per-stage seconds", path,
                        values if isinstance(values, Exception) else "no wall_s")
    return found
