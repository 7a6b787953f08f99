"""Progress: one live status line on a terminal, one plain line per finished task otherwise."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from lambda_hat.engine.tasks import Outcome


def _clock(sec: float) -> str:
    sec = int(sec)
    return f"{sec // 3600}:{sec % 3600 // 60:02d}:{sec % 60:02d}"


HEARTBEAT_SEC = 120.0  # without a finished task for this long, a line per running task


def last_line(path: Path) -> str | None:
    """The last non-empty line of a (possibly growing) text file, reading only its tail."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, 2) - 4096))
            lines = [ln for ln in f.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    except OSError:
        return None
    return lines[-1].strip() if lines else None


class Progress:
    def __init__(self, total: int, reused: int = 0, stream=None, quiet: bool = False):
        """quiet (Snakemake's -q): a line per failed task only, no live line, count or heartbeat."""
        self.total, self.reused, self.stream, self.quiet = total, reused, stream or sys.stderr, quiet
        self.tty = self.stream.isatty() and not quiet
        self.counts: dict[str, int] = {}
        self.t0 = self.last = time.time()
        if total and not quiet:
            self._emit(f"running {total} task(s), {reused} already done")

    @property
    def finished(self) -> int:
        return sum(self.counts.values())

    def eta(self) -> str:
        if not self.finished:
            return "?"
        rate = (time.time() - self.t0) / self.finished
        return _clock(rate * (self.total - self.finished))

    def update(self, outcome: Outcome) -> None:
        self.last = time.time()
        st = outcome.status
        self.counts[st] = self.counts.get(st, 0) + 1
        counts = " ".join(f"{v} {k}" for k, v in sorted(self.counts.items()))
        if self.tty:
            self.stream.write(f"\r\033[K[{self.finished}/{self.total}] {counts} | elapsed {_clock(time.time() - self.t0)} eta {self.eta()}")
            if not st.ok:
                self.stream.write(f"\n  {st}: {outcome.label}: {outcome.error}\n")
            self.stream.flush()
        elif not self.quiet or not st.ok:
            extra = f" ({outcome.walltime_sec:.1f} s)" if outcome.walltime_sec is not None else ""
            err = f": {outcome.error}" if not st.ok else ""
            self._emit(f"[{self.finished}/{self.total}] {st} {outcome.label}{extra}{err} | eta {self.eta()}")

    def heartbeat(self, running) -> None:
        """A task can run for many minutes with nothing finishing: every HEARTBEAT_SEC, one line
        per running task with how long it has run and the last line of its log (the samplers
        log their progress there). running: a callable giving (label, seconds, log path)."""
        if self.quiet or time.time() - self.last < HEARTBEAT_SEC:
            return
        lines = []
        for label, sec, log in running():
            line = last_line(log)
            lines.append(f"  running {label} ({_clock(sec)})" + (f": {line}" if line else ""))
        if lines:
            self._emit(("\r\033[K" if self.tty else "") + "\n".join(lines))
        self.last = time.time()

    def finish(self) -> None:
        if self.tty and self.total:
            self.stream.write("\n")
            self.stream.flush()

    def _emit(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()
        self.last = time.time()
