"""Progress on stderr while a check runs: phases with their elapsed time, the scan's bytes, the probe's steps.

Two observers with the same methods, passed to the pipeline as ``Settings.progress``:
``RichProgress`` (a TTY: one live rich display) and ``PlainProgress`` (off a TTY: plain lines for
CI logs and pipes; with ``-v`` one per phase and probe step, without it only a line every
``HEARTBEAT_S`` seconds of a long phase). The pipeline only calls them; nothing here measures anything.

Methods: ``phase(name)`` starts a phase (ending the one before), ``scan(total_bytes, tensors)``
is a context manager yielding ``advance(nbytes)``, ``step(i, steps, loss)`` after each probe step,
``close()`` ends the last phase.
"""

import contextlib
import math
import sys
import threading
import time

from .terminal import printable

# off a terminal, a phase silent this long gets a line: a ViT-base probe piped into a log was 94 s
# of silence, which reads as a hang
HEARTBEAT_S = 10.0


def _loss(x) -> str:
    return f"{x:.4g}" if isinstance(x, float) and math.isfinite(x) else str(x)


class PlainProgress:
    """Plain lines on stderr (``initcheck: scanning: done in 0.4 s``).

    Args:
        file: where the lines go (stderr).
        verbose: a line at every phase change and probe step (``-v``); otherwise only long phases
            are said: a line after every ``every`` seconds without one, the phase changes from then on.
        every: seconds of silence after which the current phase is said again (``HEARTBEAT_S``).
    """

    def __init__(self, file=None, verbose: bool = True, every: float | None = None):
        self.file = file or sys.stderr
        self.verbose, self.every = verbose, every if every is not None else HEARTBEAT_S
        self.name, self.t0, self.detail = None, None, ""
        self.last = time.perf_counter()   # when the last line was printed
        self.long = verbose               # once a phase was long, every phase change is said
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._beat = None

    def _say(self, text: str):
        with self._lock:
            print(f"initcheck: {printable(text)}", file=self.file, flush=True)
            self.last = time.perf_counter()

    def phase(self, name: str):
        self._end()
        self.name, self.t0, self.detail = name, time.perf_counter(), ""
        self.last = self.t0
        if self.long:
            self._say(f"{name} ...")
        if self._beat is None:
            self._stop.clear()
            self._beat = threading.Thread(target=self._heartbeat, name="initcheck-progress", daemon=True)
            self._beat.start()

    def _heartbeat(self):
        wait = self.every
        while not self._stop.wait(wait):
            name, t0, detail = self.name, self.t0, self.detail
            due = self.last + self.every - time.perf_counter()   # a line printed since resets the clock
            if name is not None and due <= 0:
                self.long = True
                self._say(f"{name}{': ' + detail if detail else ''} ({time.perf_counter() - t0:.0f} s)")
                due = self.every
            wait = max(0.05, due)

    def _end(self):
        if self.name is not None and self.long:
            fetch = next((p for p in self.detail.split(", ") if p.startswith("fetched ")), "")   # object storage
            self._say(f"{self.name}: done in {time.perf_counter() - self.t0:.1f} s" + (f" ({fetch})" if fetch else ""))
        self.name = None

    def close(self):
        """End the last phase, and the thread that says long phases."""
        self._end()
        if self._beat is not None:
            self._stop.set()
            self._beat.join()
            self._beat = None

    @contextlib.contextmanager
    def scan(self, total_bytes: int, tensors: int):
        self.phase(f"scanning {tensors} tensors ({total_bytes / 2**20:.1f} MiB)")
        done = [0, 0]   # tensors, bytes

        def advance(nbytes: int):
            done[0] += 1
            done[1] += nbytes
            self.detail = _with_fetch(f"{done[0]}/{tensors} tensors, {_bytes(done[1])}", self.fetch)

        yield advance

    fetch = ""   # object storage: bytes fetched and throughput, shown beside the phase's own detail

    def fetched(self, nbytes: int, seconds: float):
        """Bytes fetched from object storage so far, over ``seconds`` (``loader.remote``)."""
        self.fetch = _fetch_text(nbytes, seconds)
        self.detail = _with_fetch(self.detail, self.fetch)

    def step(self, i: int, steps: int, loss):
        self.detail = f"step {i + 1}/{steps}, loss {_loss(loss)}"
        # every step for short probes, about ten lines for long ones: a log, not a flood
        if self.verbose and (steps <= 20 or i == 0 or (i + 1) % max(1, steps // 10) == 0 or i + 1 == steps):
            self._say(f"probe step {i + 1}/{steps}, loss {_loss(loss)} ({time.perf_counter() - self.t0:.1f} s)")


class RichProgress:
    """A live rich display on stderr: the current phase with spinner, bar and elapsed time; finished
    phases stay above it with their times."""

    def __init__(self, console=None):
        from rich.console import Console
        from rich.progress import (BarColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn,
                                   TimeElapsedColumn)

        self.console = console or Console(stderr=True)
        self.bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), _known(BarColumn()),
                            _known(TaskProgressColumn()), TextColumn("{task.fields[detail]}"), TimeElapsedColumn(),
                            console=self.console)
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
            self.detail = _with_fetch(f"{done[0]}/{tensors} tensors, {_bytes(done[1])}", self.fetch)
            self.bar.update(self.task, advance=nbytes, detail=self.detail)

        yield advance

    fetch = ""

    def fetched(self, nbytes: int, seconds: float):
        """Bytes fetched from object storage so far, over ``seconds`` (``loader.remote``)."""
        self.fetch = _fetch_text(nbytes, seconds)
        self.detail = _with_fetch(self.detail, self.fetch)
        if self.task is not None:
            self.bar.update(self.task, detail=self.detail)

    def step(self, i: int, steps: int, loss):
        if self.bar.tasks and self.task is not None:
            self.detail = f"step {i + 1}/{steps}, loss {_loss(loss)}"
            self.bar.update(self.task, total=steps, completed=i + 1, detail=self.detail)
            self.bar.refresh()   # probe steps take seconds each: show every one


def _known(column):
    """``column`` for phases whose size is known; nothing for the others (opening, building the task
    model): rich draws an unknown total as a pulsing bar that, without colour, reads as a full one."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class Known(ProgressColumn):
        def render(self, task):
            return column.render(task) if task.total is not None else Text("")

    return Known()


def _fetch_text(nbytes: int, seconds: float) -> str:
    return f"fetched {_bytes(nbytes)}" + (f" at {_bytes(nbytes / seconds)}/s" if seconds > 0 else "")


def _with_fetch(detail: str, fetch: str) -> str:
    """``detail`` with its fetch counter replaced by ``fetch`` (the last part, when there is one)."""
    own = ", ".join(p for p in (detail or "").split(", ") if not p.startswith("fetched "))
    return ", ".join(p for p in (own, fetch) if p)


def _bytes(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n / 1e3:.1f} kB"
