"""A private one-node Slurm cluster on loopback, for tests (needs root and Debian's slurm-wlm + munge).

Exports:
    SlurmCluster(base_dir)      .start() / .stop(); .env (os.environ + SLURM_CONF), .conf, .run(cmd)
    unavailable_reason() -> str | None   why a cluster cannot be started here (None: it can)

What start() does, all under base_dir (nothing in /etc, /run or /var is touched):
  * munge: a fresh random key (mode 600) and munged on a private socket in a directory of mode 711;
  * slurm.conf: SlurmUser=root, ProctrackType=proctrack/linuxproc, TaskPlugin=task/none,
    SelectType=select/cons_tres, MpiDefault=pmi2, one node `localhost` (127.0.0.1) with this
    machine's CPU count, free loopback ports for slurmctld and slurmd, state/spool/log directories
    here, a 1-second scheduler interval so dependency chains start promptly, cred_expire=8 so
    that a requeued job starts again after 8 s instead of Slurm's default 120 s, and a FirstJobId
    drawn from the clock so that job ids (and with them MPICH's shared-memory segment names) never
    repeat across sessions;
  * slurmctld -D and slurmd -D run in the foreground as children of this process (so their pids are
    exactly known), and start() returns once `sinfo` reports the node idle.
stop() cancels every job of this cluster, waits for the queue to drain, then terminates exactly
the three daemons it started (SIGTERM, then SIGKILL after a grace period) and keeps the logs.
Every Slurm client command must see SLURM_CONF=<base_dir>/slurm.conf: use `.env`.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "srun", "sinfo", "squeue", "scontrol", "scancel")


def _which(name):
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.path.exists(p)), None)


def unavailable_reason() -> str | None:
    """None if a private cluster can be started here, else the reason it cannot."""
    missing = [n for n in DAEMONS + CLIENTS if _which(n) is None]
    if missing:
        return ("Slurm/munge not installed (missing " + ", ".join(missing) +
                "; .ci/install-system-packages installs slurm-wlm and munge as root)")
    if os.geteuid() != 0:
        return "a private Slurm cluster needs root (SlurmUser=root, slurmd runs jobs as the submitter)"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SlurmCluster:
    def __init__(self, base_dir: str, cpus: int | None = None):
        self.base = os.path.abspath(base_dir)
        self.cpus = cpus or os.cpu_count() or 1
        # Credential lifetime; also how long a requeued job waits before it may start again.
        self.cred_expire = 8
        # Job ids must not repeat across test sessions: MPICH names its node-local shared-memory
        # segment after the PMI job id, and a segment left in /dev/shm by a killed job of an earlier
        # session with the same id makes MPI_Init of the new job fail (garbage in the segment).
        self.first_job_id = 1_000_000 + (time.time_ns() // 1000) % 60_000_000
        self.conf = os.path.join(self.base, "slurm.conf")
        self.munge_socket = os.path.join(self.base, "munge", "munge.socket.2")
        self.procs: dict[str, subprocess.Popen] = {}
        self.env = dict(os.environ, SLURM_CONF=self.conf)
        # Never inherit another job's, cluster's or MPI launcher's settings.
        for key in [k for k in self.env
                    if k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_", "PMI_", "PMIX_", "HYDRA_", "MPIR_"))]:
            if key != "SLURM_CONF":
                del self.env[key]

    # -- helpers ------------------------------------------------------------------------------
    def path(self, *parts) -> str:
        return os.path.join(self.base, *parts)

    def run(self, cmd, check=True, timeout=60, **kw) -> subprocess.CompletedProcess:
        """Run a Slurm client command against this cluster; text output."""
        return subprocess.run(cmd, env=kw.pop("env", self.env), capture_output=True, text=True,
                              check=check, timeout=timeout, **kw)

    def _spawn(self, name, cmd):
        log = open(self.path("log", f"{name}.stdout"), "w")
        self.procs[name] = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)
        log.close()

    def _wait_for(self, what, predicate, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"{name} exited with {p.returncode} while waiting for {what}; "
                                       f"logs in {self.path('log')}:\n{self.logs()}")
            if predicate():
                return
            time.sleep(0.2)
        raise RuntimeError(f"timed out after {timeout} s waiting for {what}; logs:\n{self.logs()}")

    def logs(self) -> str:
        out = []
        logdir = self.path("log")
        for name in sorted(os.listdir(logdir)) if os.path.isdir(logdir) else []:
            with open(os.path.join(logdir, name), errors="replace") as f:
                tail = f.read()[-3000:]
            out.append(f"--- {name} ---\n{tail}")
        return "\n".join(out)

    # -- configuration ------------------------------------------------------------------------
    def _write_munge_key(self):
        key = self.path("munge", "munge.key")
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(1024))
        return key

    def _write_conf(self):
        ctld_port, slurmd_port = _free_port(), _free_port()
        while slurmd_port == ctld_port:
            slurmd_port = _free_port()
        p = self.path
        lines = f"""\
# Generated by tests/slurm_cluster.py: a private one-node cluster on loopback.
ClusterName=qftmltest
FirstJobId={self.first_job_id}
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={self.munge_socket},cred_expire={self.cred_expire}
CredType=cred/munge
StateSaveLocation={p('state')}
SlurmdSpoolDir={p('spool', 'slurmd-%n')}
SlurmctldPidFile={p('run', 'slurmctld.pid')}
SlurmdPidFile={p('run', 'slurmd-%n.pid')}
SlurmctldLogFile={p('log', 'slurmctld.log')}
SlurmdLogFile={p('log', 'slurmd.log')}
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=pmi2
SwitchType=switch/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,sched_min_interval=100000,bf_interval=1
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
JobRequeue=1
ReturnToService=2
MinJobAge=600
KillWait=5
OverTimeLimit=0
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
MessageTimeout=20
PlugStackConfig={p('plugstack.conf')}
NodeName=localhost NodeAddr=127.0.0.1 NodeHostname=localhost CPUs={self.cpus} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""
        with open(self.conf, "w") as f:
            f.write(lines)
        open(p("plugstack.conf"), "w").close()  # no SPANK plugins (ignore the distribution's)

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> "SlurmCluster":
        reason = unavailable_reason()
        if reason:
            raise RuntimeError(reason)
        for d in ("munge", "state", "spool", "run", "log"):
            os.makedirs(self.path(d), exist_ok=True)
        os.chmod(self.base, 0o711)
        os.chmod(self.path("munge"), 0o711)  # munged: socket dir must not be group/other writable
        key = self._write_munge_key()
        self._spawn("munged", [_which("munged"), "--foreground", "--force", f"--socket={self.munge_socket}",
                               f"--key-file={key}", f"--pid-file={self.path('run', 'munged.pid')}",
                               f"--log-file={self.path('log', 'munged.log')}",
                               f"--seed-file={self.path('munge', 'munged.seed')}"])
        self._wait_for("the munge socket", lambda: os.path.exists(self.munge_socket), timeout)
        self._write_conf()
        self._spawn("slurmctld", [_which("slurmctld"), "-D", "-c", "-i", "-f", self.conf])
        self._wait_for("slurmctld", lambda: self.run(["sinfo", "-h"], check=False, timeout=10).returncode == 0,
                       timeout)
        self._spawn("slurmd", [_which("slurmd"), "-D", "-N", "localhost", "-f", self.conf])
        self._wait_for("the node to become idle", self._node_idle, timeout)
        return self

    def _node_idle(self) -> bool:
        r = self.run(["sinfo", "-h", "-N", "-o", "%N %t"], check=False, timeout=10)
        return r.returncode == 0 and r.stdout.split() == ["localhost", "idle"]

    def queue(self) -> list[str]:
        r = self.run(["squeue", "-h", "-o", "%i"], check=False, timeout=10)
        return r.stdout.split() if r.returncode == 0 else []

    def cancel_all(self, timeout: float = 30.0):
        """Cancel every job on this cluster and wait until none is left in the queue."""
        if self.procs.get("slurmctld") is None or self.procs["slurmctld"].poll() is not None:
            return
        self.run(["scancel", "--full", "--user", str(os.getuid())], check=False, timeout=10)
        deadline = time.time() + timeout
        while self.queue() and time.time() < deadline:
            time.sleep(0.3)

    def stop(self):
        try:
            self.cancel_all()
        finally:
            for name in reversed(DAEMONS):
                p = self.procs.get(name)
                if p is None or p.poll() is not None:
                    continue
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=5)
            self.procs.clear()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
