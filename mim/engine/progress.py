"""Pre-training's periodic progress lines: step, loss, lr, img/s, ETA (every other loop: `mim.progress`)."""

from __future__ import annotations

import logging
import time

from mim.progress import format_duration

log = logging.getLogger("mim.train")


class TrainProgress:
    """Prints a line at most every `every_s` seconds (or every `every_steps` steps), and on the last step.

    Throughput is measured over the interval since the previous line, so it reflects the current
    speed rather than start-up costs.
    """

    def __init__(self, total_steps: int, global_batch: int, start_step: int = 0, every_s: float = 10.0,
                 every_steps: int | None = None, enabled: bool = True) -> None:
        self.total = total_steps
        self.batch = global_batch
        self.every_s = every_s
        self.every_steps = every_steps
        self.enabled = enabled
        self.start_time = self._last_time = time.perf_counter()
        self._last_step = start_step
        self.images_per_s = 0.0

    def due(self, step: int) -> bool:
        """Whether a line is due after finishing 0-based `step`."""
        done = step + 1
        if done == self.total:
            return True
        if self.every_steps is not None:
            return done % self.every_steps == 0
        return time.perf_counter() - self._last_time >= self.every_s

    def report(self, step: int, loss: float, lr: float, extra: dict[str, float] | None = None) -> str:
        now = time.perf_counter()
        done = step + 1
        steps = done - self._last_step
        elapsed = max(now - self._last_time, 1e-9)
        self.images_per_s = steps * self.batch / elapsed
        eta = (self.total - done) * elapsed / max(steps, 1)
        self._last_time, self._last_step = now, done
        parts = [f"step {done}/{self.total}", f"loss {loss:.4f}", f"lr {lr:.2e}",
                 f"{self.images_per_s:,.0f} img/s", f"eta {format_duration(eta)}"]
        parts += [f"{k} {v:.4g}" for k, v in (extra or {}).items()]
        line = " | ".join(parts)
        if self.enabled:
            log.info(line)
        return line


def history_parts(history: dict[str, list[float]]) -> dict[str, str]:
    """{file stem: CSV of `step,<name>`}: the total loss and each of the method's logged parts (loss terms,
    accuracies) on its own, so each is drawn as its own plot on its own scale; `/` in a name becomes `-`."""
    names = ["loss", *sorted(k for k in history if k not in ("step", "loss", "lr"))]
    return {name.replace("/", "-"): "\n".join([f"step,{name}", *(f"{s:.6g},{v:.6g}" for s, v in
                                                                 zip(history["step"], history[name], strict=True))])
            + "\n" for name in names}


def history_csv(history: dict[str, list[float]]) -> str:
    """step, loss, lr, then the method's own logged parts, one row per recorded step."""
    columns = ["step", "loss", "lr", *sorted(k for k in history if k not in ("step", "loss", "lr"))]
    rows = [",".join(columns)] + [",".join(f"{history[c][i]:.6g}" for c in columns)
                                  for i in range(len(history["step"]))]
    return "\n".join(rows) + "\n"
