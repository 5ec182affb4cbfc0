"""Progress of long loops (decoding images, k-means passes, feature extraction, probes, fine-tuning).

On a terminal (stderr is a tty) a bar is redrawn in place at most every `redraw_s`; otherwise (DVC, Prefect,
a log file) one plain line is logged at most every `every_s` seconds, plus the last one:

    features (train): 4096/50000 images (8%) | 812 images/s | elapsed 00:05 | eta 00:56

Both go through `logging` (the call site's logger) and show only when it is enabled for INFO, so `mim -q` and a
library user who never configured logging see nothing. Only rank 0 of a multi-process run shows progress.
`update` costs a counter add and a clock read; values shown beside the counts (loss, accuracy) can be passed as
a callable, evaluated only when a line is drawn, so a loop never syncs a GPU just to report.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TextIO, TypeVar

T = TypeVar("T")
Info = Mapping[str, object]


def format_duration(seconds: float) -> str:
    """`mm:ss`, or `h:mm:ss` from an hour."""
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def format_rate(rate: float, unit: str) -> str:
    """`812 images/s`, `2.50 steps/s`, `0.0417 steps/s`."""
    return f"{rate:,.0f} {unit}/s" if rate >= 100 else f"{rate:.3g} {unit}/s"


def _format_value(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def is_main_process() -> bool:
    """Rank 0 of torch.distributed (or of torchrun's RANK before it is initialized), or a single process."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return os.environ.get("RANK", "0") == "0"


class Progress:
    """Counts work done out of `total` (None: unknown) and shows it; use as a context manager (or call `close`).

    `unit` names what is counted ("images", "steps"); `initial` is work done before (a resumed run), not counted
    in the rate. `bar` forces the terminal bar on or off (default: stderr is a tty); `enabled` forces showing
    at all (default: rank 0). `clock` and `stream` are for tests.
    """

    def __init__(self, total: int | None, desc: str, unit: str = "it", *, logger: logging.Logger | str = "mim",
                 initial: int = 0, every_s: float = 10.0, redraw_s: float = 0.2, bar: bool | None = None,
                 enabled: bool | None = None, clock: Callable[[], float] = time.monotonic,
                 stream: TextIO | None = None) -> None:
        self.log = logging.getLogger(logger) if isinstance(logger, str) else logger
        self.total, self.desc, self.unit, self.initial = total, desc, unit, initial
        self.done = initial
        self.stream = stream or sys.stderr
        shown = is_main_process() if enabled is None else enabled
        self.shown = shown and self.log.isEnabledFor(logging.INFO)
        self.bar = self.shown and (_isatty(self.stream) if bar is None else bar)
        self.interval = redraw_s if self.bar else every_s
        self.clock = clock
        self.began = clock()
        self._next = self.began + self.interval if self.shown else float("inf")
        self._info: Info | Callable[[], Info] | None = None
        self._drawn = False  # a bar is on the screen (the next plain output starts on a new line)
        self.closed = False

    # -- counting ----------------------------------------------------------------------------
    def update(self, n: int = 1, info: Info | Callable[[], Info] | None = None) -> None:
        """Add `n` done; `info`: values to show beside the counts, or a callable giving them (called only when
        something is drawn: reading a GPU loss syncs the device)."""
        self.done += n
        if info is not None:
            self._info = info
        if self.clock() >= self._next:
            self._show(final=False)

    def close(self, **final: object) -> None:
        """Show the last line (with `final` values, e.g. an accuracy known only at the end); idempotent."""
        if self.closed:
            return
        self.closed = True
        if self.shown:
            self._show(final=True, extra=final)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            self.close()
            return
        self.closed = True  # a failed loop gets no "last line"; a bar on the screen gets its line ended
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()

    # -- showing -----------------------------------------------------------------------------
    def _show(self, final: bool, extra: Mapping[str, object] | None = None) -> None:
        now = self.clock()
        self._next = now + self.interval
        info = self._info() if callable(self._info) else self._info
        values = dict(info or {})
        values.update(extra or {})
        if self.bar:
            self._draw_bar(now, values, final)
        else:
            self.log.info("%s", self.line(now, values))

    def line(self, now: float, values: Mapping[str, object] | None = None) -> str:
        """`desc: done/total unit (pct) | rate | elapsed | eta | name value ...`."""
        elapsed = now - self.began
        rate = (self.done - self.initial) / elapsed if elapsed > 0 else 0.0
        count = f"{self.done}/{self.total} {self.unit}" if self.total is not None else f"{self.done} {self.unit}"
        if self.total:
            count += f" ({100 * self.done / self.total:.0f}%)"
        parts = [f"{self.desc}: {count}", format_rate(rate, self.unit), f"elapsed {format_duration(elapsed)}"]
        if self.total is not None and self.done < self.total and rate > 0:
            parts.append(f"eta {format_duration((self.total - self.done) / rate)}")
        parts += [f"{k} {_format_value(v)}" for k, v in (values or {}).items()]
        return " | ".join(parts)

    def _draw_bar(self, now: float, values: Mapping[str, object], final: bool) -> None:
        width = shutil.get_terminal_size((100, 20)).columns
        text = self.line(now, values)
        if self.total:
            filled = int(20 * min(self.done, self.total) / self.total)
            head, _, tail = text.partition(" | ")
            text = f"{head} [{'#' * filled}{'.' * (20 - filled)}] | {tail}"
        text = text[: width - 1]
        self.stream.write("\r" + text.ljust(width - 1) + ("\n" if final else ""))
        self.stream.flush()
        self._drawn = not final


def track(iterable: Iterable[T], total: int | None = None, desc: str = "", unit: str = "it", *,
          logger: logging.Logger | str = "mim", **kwargs: object) -> Iterator[T]:
    """Yield from `iterable`, counting one per item (`total` defaults to its `len`), and show the last line when
    it is exhausted."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    with Progress(total, desc, unit, logger=logger, **kwargs) as progress:  # type: ignore[arg-type]
        for item in iterable:
            yield item
            progress.update()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False
