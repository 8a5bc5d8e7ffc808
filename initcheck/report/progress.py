"""Progress on stderr while a check runs: phases with their elapsed time, the scan's bytes, the probe's steps.

Two observers with the same methods, passed to the pipeline as ``Settings.progress``:
``RichProgress`` (a TTY: one live rich display) and ``PlainProgress`` (``-v`` off a TTY: one line
per phase, for CI logs). The pipeline only calls them; nothing here measures anything.

Methods: ``phase(name)`` starts a phase (ending the one before), ``scan(total_bytes, tensors)``
is a context manager yielding ``advance(nbytes)``, ``step(i, steps, loss)`` after each probe step,
``close()`` ends the last phase.
"""

import contextlib
import math
import sys
import time

from .terminal import printable


def _loss(x) -> str:
    return f"{x:.4g}" if isinstance(x, float) and math.isfinite(x) else str(x)


class PlainProgress:
    """One line per phase on stderr (``initcheck: scanning: done in 0.4 s``), probe steps every so often."""

    def __init__(self, file=None):
        self.file = file or sys.stderr
        self.name, self.t0 = None, None

    def _say(self, text: str):
        print(f"initcheck: {printable(text)}", file=self.file, flush=True)

    def phase(self, name: str):
        self.close()
        self.name, self.t0 = name, time.perf_counter()
        self._say(f"{name} ...")

    def close(self):
        if self.name is not None:
            self._say(f"{self.name}: done in {time.perf_counter() - self.t0:.1f} s")
        self.name = None

    @contextlib.contextmanager
    def scan(self, total_bytes: int, tensors: int):
        self.phase(f"scanning {tensors} tensors ({total_bytes / 2**20:.1f} MiB)")
        yield None

    def step(self, i: int, steps: int, loss):
        # every step for short probes, about ten lines for long ones: a log, not a flood
        if steps <= 20 or i == 0 or (i + 1) % max(1, steps // 10) == 0 or i + 1 == steps:
            self._say(f"probe step {i + 1}/{steps}, loss {_loss(loss)} ({time.perf_counter() - self.t0:.1f} s)")


class RichProgress:
    """A live rich display on stderr: the current phase with spinner, bar and elapsed time; finished
    phases stay above it with their times."""

    def __init__(self, console=None):
        from rich.console import Console
        from rich.progress import (BarColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn,
                                   TimeElapsedColumn)

        self.console = console or Console(stderr=True)
        self.bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                            TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), console=self.console)
        self.task, self.name, self.t0 = None, None, None
        self.bar.start()

    def phase(self, name: str, total=None):
        from rich.markup import escape

        self._end()
        name = escape(printable(name))  # phase names may hold checkpoint folder names
        self.name, self.t0 = name, time.perf_counter()
        self.task, self.detail = self.bar.add_task(name, total=total, detail=""), ""

    def _end(self):
        if self.task is not None:
            self.bar.remove_task(self.task)
            detail = f" ({self.detail})" if self.detail else ""
            self.console.print(f"[dim]initcheck: {self.name}: {time.perf_counter() - self.t0:.1f} s{detail}[/]",
                               highlight=False, markup=True)
        self.task = None

    def close(self):
        self._end()
        self.bar.stop()

    @contextlib.contextmanager
    def scan(self, total_bytes: int, tensors: int):
        self.phase("scanning", total=total_bytes or None)
        done = [0, 0]   # tensors, bytes

        def advance(nbytes: int):
            done[0] += 1
            done[1] += nbytes
            self.detail = f"{done[0]}/{tensors} tensors, {_bytes(done[1])}"
            self.bar.update(self.task, advance=nbytes, detail=self.detail)

        yield advance

    def step(self, i: int, steps: int, loss):
        if self.bar.tasks and self.task is not None:
            self.detail = f"step {i + 1}/{steps}, loss {_loss(loss)}"
            self.bar.update(self.task, total=steps, completed=i + 1, detail=self.detail)
            self.bar.refresh()   # probe steps take seconds each: show every one


def _bytes(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n / 1e3:.1f} kB"
