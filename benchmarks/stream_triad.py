"""Memory bandwidth of one core: the STREAM triad a = b + s c, jitted with numba.

Exports:
    triad_bandwidth(n=2**24, repeats=7) -> dict(GB/s counted as STREAM does, 24 bytes per element,
                                               and with the write-allocate read, 32 bytes; also per
                                               second of process CPU time, for a shared machine)

Arrays of 3 x n doubles (3 x 128 MiB by default: far beyond any cache). STREAM convention: the
best of `repeats` passes. Run under mpiexec, every rank measures at once (the shared bandwidth).
`python stream_triad.py` prints the single-core figure.
"""
from __future__ import annotations

import time

import numba
import numpy as np


@numba.njit(cache=True, fastmath=False)
def _triad(a, b, c, s):
    for i in range(a.size):
        a[i] = b[i] + s * c[i]


def triad_bandwidth(n: int = 2**24, repeats: int = 7, barrier=None) -> dict:
    a, b, c = np.zeros(n), np.full(n, 1.0), np.full(n, 2.0)
    _triad(a, b, c, 3.0)
    best = best_cpu = np.inf
    for _ in range(repeats):
        if barrier is not None:
            barrier()
        t0, c0 = time.perf_counter(), time.process_time()
        _triad(a, b, c, 3.0)
        best_cpu = min(best_cpu, time.process_time() - c0)
        best = min(best, time.perf_counter() - t0)
    return {"n": n, "best_s": best, "best_cpu_s": best_cpu,
            "GB_per_s_stream": 24.0 * n / best / 1e9,
            "GB_per_s_with_write_allocate": 32.0 * n / best / 1e9,
            "GB_per_s_stream_cpu": 24.0 * n / best_cpu / 1e9}


if __name__ == "__main__":
    r = triad_bandwidth()
    print(f"triad: {r['GB_per_s_stream']:.1f} GB/s (STREAM counting, wall clock), "
          f"{r['GB_per_s_with_write_allocate']:.1f} GB/s with write-allocate; "
          f"{r['GB_per_s_stream_cpu']:.1f} GB/s per CPU second")
