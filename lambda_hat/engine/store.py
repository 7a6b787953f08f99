"""Content-addressed store: one directory per task ID, written atomically, locked per ID."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import uuid
from pathlib import Path

from lambda_hat.engine.tasks import Status

TASK_ID = re.compile(r"[0-9a-f]{16}")  # tasks.task_id: a sha256's first 16 hex digits
PROBE_BYTES = 1 << 20  # free space a store must have before any work starts


def crashpoint(name: str) -> None:
    """Fault injection for the crash tests: LAMBDA_HAT_CRASHPOINT=NAME kills the process here."""
    if os.environ.get("LAMBDA_HAT_CRASHPOINT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def tmp_path(path: Path) -> Path:
    """A hidden sibling with a name of its own: concurrent writers never share a temporary."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")


def _plain(o):
    """numpy, JAX and torch scalars and arrays (a task's np.float32 loss) as the numbers and lists
    they hold, not their text ("0.9" ranked as text, "[0.  0.1]" read as no list); else the text."""
    if callable(getattr(o, "tolist", None)):
        with contextlib.suppress(Exception):
            return o.tolist()
    return str(o)


def write_json(path: Path, data, sync: bool = True) -> None:
    """Write then rename, so a reader never sees half a file; `sync` also survives a power cut."""
    tmp = tmp_path(path)
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True, default=_plain)
        if sync:
            f.flush()
            os.fsync(f.fileno())
    crashpoint(f"write:{path.name}")
    os.replace(tmp, path)


def write_frame(df, path: Path) -> Path:
    """A pandas table as `path` (parquet) and its .csv sibling, each written then renamed. An
    integer beyond 64 bits (a task's metric of 1e23 written as an integer) is written as a float:
    parquet holds none wider, and pyarrow's overflow had ended the workflow after its tasks ran."""
    wide = lambda v: isinstance(v, int) and not isinstance(v, bool) and not -(2**63) <= v < 2**63  # noqa: E731
    for c in [c for c in df.columns if df[c].dtype == object and any(wide(v) for v in df[c])]:
        df = df.assign(**{c: [float(v) if wide(v) else v for v in df[c]]})
    for p, write in ((path, df.to_parquet), (path.with_suffix(".csv"), lambda f: df.to_csv(f, index=False))):
        tmp = tmp_path(p)
        write(tmp)
        crashpoint(f"write:{p.name}")
        os.replace(tmp, p)
    return path


_dirs: set[Path] = set()


def _made(d: Path) -> Path:
    """d, created once per process (a mkdir per task costs more than the rest of its bookkeeping)."""
    if d not in _dirs:
        d.mkdir(parents=True, exist_ok=True)
        _dirs.add(d)
    return d


def read_json(path: Path):
    try:
        with open(path) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


class Store:
    """Layout: ROOT/<kind>/<id>/ with config.json, manifest.json, metrics.json, log.txt, artifacts.

    A task works in ROOT/<kind>/.tmp-<id>-<rand>/ and is renamed into place when it ends, so a
    directory at its final path always has a manifest; only status "done" counts as done.
    """

    def __init__(self, root: Path):
        self.root = Path(root).expanduser()  # a file's store_root: ~/scratch/runs

    def dir(self, kind: str, tid: str) -> Path:
        return self.root / kind / tid

    def manifest(self, kind: str, tid: str) -> dict | None:
        return read_json(f"{self.root}/{kind}/{tid}/manifest.json")  # a string: pathlib costs 30 µs a call

    def is_done(self, kind: str, tid: str) -> bool:
        m = self.manifest(kind, tid)
        return bool(m) and m.get("status") == Status.DONE

    def check_writable(self) -> None:
        from lambda_hat.engine.typed import InputError

        probe = self.root / f".probe-{uuid.uuid4().hex[:8]}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with open(probe, "wb") as f:  # room for a task's small files, or fail now, not mid-sweep
                f.write(b"\0" * PROBE_BYTES)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise InputError(f"store {self.root}: not writable ({e.strerror})") from None
        finally:
            with contextlib.suppress(OSError):
                probe.unlink()

    @contextlib.contextmanager
    def lock(self, tid: str):
        """Exclusive per-ID lock across processes (flock is released if the holder dies)."""
        d = _made(self.root / ".locks")
        with open(d / f"{tid}.lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def begin(self, kind: str, tid: str) -> Path:
        tmp = self.root / kind / f".tmp-{tid}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        return tmp

    def commit(self, tmp: Path, kind: str, tid: str) -> Path:
        final = self.dir(kind, tid)
        crashpoint("commit")
        if final.exists():  # an earlier failed attempt, or --force
            old = final.with_name(f".old-{tid}-{uuid.uuid4().hex[:8]}")
            os.rename(final, old)
            shutil.rmtree(old, ignore_errors=True)
        os.rename(tmp, final)
        crashpoint("committed")
        return final

    def note_version(self, key: str, version: str) -> None:
        """Remember the code version of the latest finished result of a task key (tasks.Task.key)."""
        d = _made(self.root / ".versions")
        tmp = tmp_path(d / key)
        tmp.write_text(version)
        os.replace(tmp, d / key)

    def last_version(self, key: str) -> str | None:
        try:
            with open(f"{self.root}/.versions/{key}") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def resume_dir(self, kind: str, tid: str) -> Path:
        """Where an unfinished task keeps what a rerun resumes from (see runner.Context)."""
        return Path(self._resume(kind, tid))

    def has_resume(self, kind: str, tid: str) -> bool:
        return os.path.isdir(self._resume(kind, tid))

    def _resume(self, kind: str, tid: str) -> str:
        return f"{self.root}/{kind}/.resume-{tid}"  # a string: pathlib costs ~30 µs, a dry run asks 1e5 times

    def leftovers(self) -> list[tuple[Path, str]]:
        """(directory, task ID) of temporaries of tasks that never finished or are running."""
        dirs = sorted(p for p in self.root.glob("*/.*-*") if p.is_dir() and p.name.startswith((".tmp-", ".old-")))
        return [(p, p.name.split("-")[1]) for p in dirs]

    def is_running(self, tid: str) -> bool:
        """Whether some process holds the task's lock right now."""
        try:
            f = open(f"{self.root}/.locks/{tid}.lock")
        except FileNotFoundError:
            return False
        with f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
        return False

    def is_kind_folder(self) -> bool:
        """Whether the root holds task directories itself: one kind's folder of a store (runs/llc)."""
        return self.root.is_dir() and any(TASK_ID.fullmatch(p.name) and p.is_dir() for p in self.root.iterdir())

    def entries(self):
        """(kind, id, manifest) for every finished directory: a directory named by a task ID, so
        that a folder of the user's in the store (a gallery at runs/promotion) is no task."""
        for kd in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")) if self.root.exists() else []:
            for d in sorted(kd.iterdir()):
                if d.is_dir() and TASK_ID.fullmatch(d.name):
                    yield kd.name, d.name, read_json(d / "manifest.json") or {}
