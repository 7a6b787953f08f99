"""A single-node SLURM cluster on localhost for the SLURM tests (Debian's SLURM 22.05 + munge).

    python tests/engine/slurm/cluster.py start DIR     # install if missing, start, wait until idle
    python tests/engine/slurm/cluster.py stop DIR      # cancel jobs, end exactly the recorded daemons

Daemons run in the foreground mode (-D/-F) in their own sessions, so they outlive the shell;
their PIDs go to DIR/pids.json and `stop` ends those and nothing else. Clients need
SLURM_CONF=DIR/slurm.conf in their environment.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]


class Unavailable(Exception):
    """This machine cannot run the test cluster (the reason says why)."""


def install() -> None:
    if all(shutil.which(b) for b in ("slurmctld", "slurmd", "sbatch", "munged", "mungekey")):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise Unavailable("SLURM packages missing and no root apt-get to install them")
    rc = Path("/usr/sbin/policy-rc.d")  # keep the packages from starting system services
    existed = rc.exists()
    if not existed:
        rc.write_text("#!/bin/sh\nexit 101\n")
        rc.chmod(0o755)
    try:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *PACKAGES]):
            r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
            if r.returncode:
                raise Unavailable(f"{' '.join(cmd)} failed: {r.stderr.strip()[-300:]}")
    finally:
        if not existed:
            rc.unlink()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _daemon(cmd: list[str], log: Path, env: dict) -> int:
    with open(log, "ab") as f:
        return subprocess.Popen(cmd, stdout=f, stderr=f, stdin=subprocess.DEVNULL, env=env, start_new_session=True).pid


def _node_line() -> str:
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout.splitlines()[0]
    fields = dict(f.split("=", 1) for f in out.split())
    fields["NodeName"] = "localhost"
    fields["RealMemory"] = str(int(fields["RealMemory"]) * 9 // 10)  # never drained for "low memory"
    return " ".join(f"{k}={v}" for k, v in fields.items()) + " NodeAddr=127.0.0.1 State=UNKNOWN"


def start(d: Path) -> dict:
    install()
    if os.geteuid() != 0:
        raise Unavailable("the test cluster runs its daemons as root")
    d = Path(d).resolve()
    for sub in ("state", "spool", "munge"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    sock, key = d / "munge" / "munge.sock", d / "munge" / "munge.key"
    if not key.exists():
        subprocess.run(["mungekey", "--create", f"--keyfile={key}"], check=True, capture_output=True)
    key.chmod(0o600)
    env = {**os.environ, "SLURM_CONF": str(d / "slurm.conf")}
    pids = {"munged": _daemon(["munged", "-F", "--force", f"--socket={sock}", f"--key-file={key}", f"--pid-file={d / 'munge' / 'munged.pid'}",
                                f"--seed-file={d / 'munge' / 'seed'}", f"--log-file={d / 'munge' / 'munged.log'}"], d / "munged.out", env)}  # fmt: skip
    _wait(lambda: subprocess.run(f"munge -S {sock} -n | unmunge -S {sock}", shell=True, capture_output=True).returncode == 0, 10, "munged")
    (d / "slurm.conf").write_text(
        "\n".join([
            "ClusterName=lhtest", "SlurmctldHost=localhost", "SlurmUser=root",
            f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
            "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={sock}",
            f"StateSaveLocation={d / 'state'}", f"SlurmdSpoolDir={d / 'spool'}",
            f"SlurmctldPidFile={d / 'slurmctld.pid'}", f"SlurmdPidFile={d / 'slurmd.pid'}",
            f"SlurmctldLogFile={d / 'slurmctld.log'}", f"SlurmdLogFile={d / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "MpiDefault=none",
            "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core", "ReturnToService=2",
            "SchedulerParameters=batch_sched_delay=0", "SlurmdTimeout=30", "InactiveLimit=0", "KillWait=2",
            _node_line(), "PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP",
        ]) + "\n"
    )  # fmt: skip
    conf = str(d / "slurm.conf")
    pids["slurmctld"] = _daemon(["slurmctld", "-D", "-i", "-f", conf], d / "slurmctld.out", env)
    pids["slurmd"] = _daemon(["slurmd", "-D", "-N", "localhost", "-f", conf], d / "slurmd.out", env)
    (d / "pids.json").write_text(json.dumps(pids))
    try:
        _wait(
            lambda: subprocess.run(["sinfo", "-h", "-n", "localhost", "-o", "%t"], capture_output=True, text=True, env=env).stdout.strip() == "idle",
            60,
            "node idle",
        )
    except Unavailable:
        stop(d)
        raise
    return env


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"  # a zombie counts as dead
    except (FileNotFoundError, IndexError):
        return False


def _wait(ok, seconds: float, what: str) -> None:
    end = time.time() + seconds
    while time.time() < end:
        if ok():
            return
        time.sleep(0.2)
    raise Unavailable(f"timed out waiting for {what}")


def stop(d: Path) -> None:
    d = Path(d).resolve()
    pids = json.loads((d / "pids.json").read_text()) if (d / "pids.json").exists() else {}
    env = {**os.environ, "SLURM_CONF": str(d / "slurm.conf")}
    if pids.get("slurmctld") and _alive(pids["slurmctld"]):
        subprocess.run(["scancel", "--full", "--user", "root"], capture_output=True, env=env, timeout=30)
        time.sleep(1)
    for name in ("slurmd", "slurmctld", "munged"):
        pid = pids.get(name)
        if pid and _alive(pid):
            os.kill(pid, signal.SIGTERM)
            try:
                _wait(lambda: not _alive(pid), 10, name)
            except Unavailable:
                os.kill(pid, signal.SIGKILL)


if __name__ == "__main__":
    action, where = sys.argv[1], Path(sys.argv[2])
    try:
        if action == "start":
            start(where)
            print(f"export SLURM_CONF={where.resolve() / 'slurm.conf'}")
        else:
            stop(where)
    except Unavailable as e:
        sys.exit(f"slurm test cluster unavailable: {e}")
