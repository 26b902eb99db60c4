"""Progress of long work: one helper for every command (tqdm on rank 0; log lines when quiet).

A bar is drawn on rank 0 of `comm` only, on stderr, unless `quiet` (batch jobs): then at most one
timestamped line every `log_every` seconds goes to stderr (and one at close), so a Slurm log shows
that a job is alive without filling up. Other ranks get a silent object with the same methods.

Exports:
    Progress(total, desc, unit="it", comm=None, quiet=False, initial=0, log_every=10.0)
        .update(done=None, **postfix)   set the count to `done` (default: one more) and the postfix
        .write(message)                 a line on rank 0 that does not break the bar
        .close()                        (also as a context manager)
    utc_now() -> str                    "YYYY-mm-ddTHH:MM:SSZ"
"""
from __future__ import annotations

import datetime as _dt
import sys
import time


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Progress:
    def __init__(self, total, desc: str, unit: str = "it", comm=None, quiet: bool = False, initial: int = 0,
                 log_every: float = 10.0, leave: bool = True):
        self.total, self.desc, self.unit, self.quiet, self.log_every = total, desc, unit, quiet, log_every
        self.root = comm is None or comm.rank == 0
        self.n = self.n0 = int(initial)
        self.t0 = self.last_log = time.time()
        self.postfix = {}
        self.logged = self.n
        self.bar = None
        if self.root and not quiet:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                            mininterval=0.5, leave=leave)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def update(self, done=None, **postfix):
        self.n = self.n + 1 if done is None else int(done)
        self.postfix.update(postfix)
        if self.bar is not None:
            self.bar.update(self.n - self.bar.n)
            if postfix:
                self.bar.set_postfix({k: str(v) for k, v in self.postfix.items()}, refresh=False)
        elif self.root and self.quiet and time.time() - self.last_log >= self.log_every:
            self._log_line()

    def _log_line(self):
        self.last_log, self.logged = time.time(), self.n
        rate = (self.n - self.n0) / max(time.time() - self.t0, 1e-9)
        extra = "".join(f", {k} {v}" for k, v in self.postfix.items())
        total = f"/{self.total}" if self.total else ""
        print(f"{utc_now()} qftml {self.desc}: {self.n}{total} {self.unit}, {rate:.3g} {self.unit}/s{extra}",
              file=sys.stderr, flush=True)

    def write(self, message: str):
        if not self.root:
            return
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.root and self.quiet and self.n != self.logged:
            self._log_line()
