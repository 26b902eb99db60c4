"""Random streams of the driver: the engine's Philox-4x32-10, one registry of purposes.

A draw is fixed by (seed, purpose, counter): the key is rng_key(seed, purpose) of
cpp/rng/philox.hpp, the counter (index lo, index hi, c2, c3), with `index` usually a global site
(or block, or link) index. Nothing depends on the rank that draws, so results are the same on any
process grid. Every stream of the driver has a named purpose here (the engine's own sweeps use
purposes 1-4); new code adds a name instead of making seeds by arithmetic.

Sub-chains (a replica, a thermodynamic-integration node, a comparison chain) get their own seed
    derive_seed(seed, purpose, *ids)   = the 64-bit Philox output at counter ids under (seed, purpose)
so two different (purpose, ids) never share a stream except by a 2^-64 accident (arithmetic such as
seed + 7919 i collides as soon as two formulas meet).

Exports:
    PURPOSES                          {name: purpose code}; codes >= 100 (below are the engine's)
    purpose(name) -> int              the code of a registered purpose (KeyError names the known ones)
    derive_seed(seed, name, *ids)     a 64-bit seed for the sub-stream ids (up to 3 ints, id0 < 2^64,
                                      id1, id2 < 2^32)
    words(seed, name, index, c2=0, c3=0) -> uint32 (n, 4)
    uniform(seed, name, index, c2=0, c3=0) -> float64 in [0, 1), 52 random bits (words 0, 1)
    uniform_range(seed, name, index0, n, c2=0, c3=0)   the same at the indices index0 .. index0 + n - 1
    bernoulli(seed, name, index0, p, c2=0) -> (uniform_range(seed, name, index0, p.size, c2) < p) as
                                     floats of p's shape, in one C++ pass (no array of uniforms)
    normal(seed, name, index, c2=0, c3=0) -> standard normals (Box-Muller on words 0, 1)
"""
from __future__ import annotations

import numpy as np

from qftml import _core

PURPOSES = {
    "rg_tie": 101,            # majority-rule ties of R_b (ising)
    "irg_noise": 102,         # noise of the inverse RG in the kernel of the block average
    "irg_refine": 103,        # block-constrained refinement of upscaled configurations (config, level)
    "irg_relax": 104,         # unconstrained refinement chains of upscaled configurations (config, level)
    "learn_chain": 110,       # the chain of each replica of `qftml learn`
    "ti_node": 111,           # thermodynamic-integration chains (free energies)
    "compare_chain": 112,     # direct chains of S and A in learn's comparison
    "fit_chain": 113,         # persistent chains of `qftml fit`
    "couplings_init": 114,    # random initial couplings
    "fit_batch": 115,         # mini-batch membership of `qftml fit` (per configuration and epoch)
    "fit_noise": 116,         # noise of the noisy copies of an image in `qftml fit` data
    "gaussian_samples": 117,  # exact Gaussian draws (qftml.exact.gaussian_samples: oracles, example data)
    "network_init": 120,      # phi^4 networks: initial weights
    "network_chain": 121,     # persistent chains of the networks
    "network_batch": 122,     # mini-batch order
    "ais": 123,               # annealed importance sampling
    "network_sample": 124,    # phi^4 networks: model samples (estimator.sample, plots, stacks)
    "network_split": 125,     # phi^4 networks: the held-out split of the data
    "direct_chain": 130,      # direct ensembles of `qftml irg` (per size)
    "critical_chain": 131,    # examples/critical_coupling.py: the chain of each size L
}


def purpose(name: str) -> int:
    try:
        return PURPOSES[name]
    except KeyError:
        raise KeyError(f"unknown random-stream purpose {name!r} (registered: {', '.join(PURPOSES)})") from None


def _seed(seed) -> int:
    seed = int(seed)
    if not 0 <= seed < 2 ** 64:
        raise ValueError(f"seed must be an integer in [0, 2^64), got {seed}")
    return seed


def derive_seed(seed: int, name: str, *ids: int) -> int:
    """A 64-bit seed of the sub-stream `ids` of purpose `name` (deterministic, collision-free in practice)."""
    if len(ids) > 3:
        raise ValueError("derive_seed takes at most three stream ids")
    ids = [int(i) for i in ids] + [0] * (3 - len(ids))
    if not (0 <= ids[0] < 2 ** 64 and 0 <= ids[1] < 2 ** 32 and 0 <= ids[2] < 2 ** 32):
        raise ValueError(f"stream ids {ids} out of range (id0 < 2^64, id1 and id2 < 2^32)")
    w = _core.philox_words(_seed(seed), purpose(name), np.array([ids[0]], dtype=np.uint64), ids[1], ids[2])[0]
    return int(w[0]) | (int(w[1]) << 32)


def words(seed: int, name: str, index, c2: int = 0, c3: int = 0) -> np.ndarray:
    index = np.asarray(index, dtype=np.uint64)
    return _core.philox_words(_seed(seed), purpose(name), index.ravel(), int(c2) & 0xFFFFFFFF,
                              int(c3) & 0xFFFFFFFF).reshape(index.shape + (4,))


def uniform(seed: int, name: str, index, c2: int = 0, c3: int = 0) -> np.ndarray:
    """One uniform in [0, 1) per entry of `index` (the engine's uniform52 of words 0 and 1)."""
    index = np.asarray(index, dtype=np.uint64)
    return _core.philox_uniform(_seed(seed), purpose(name), index.ravel(), int(c2) & 0xFFFFFFFF,
                                int(c3) & 0xFFFFFFFF).reshape(index.shape)


def uniform_range(seed: int, name: str, index0: int, n: int, c2: int = 0, c3: int = 0) -> np.ndarray:
    """uniform(seed, name, index0 + arange(n), c2, c3) without building the index array twice."""
    index = np.arange(index0, index0 + n, dtype=np.uint64)
    return _core.philox_uniform(seed, PURPOSES[name], index, int(c2) & 0xFFFFFFFF, int(c3) & 0xFFFFFFFF)


def bernoulli(seed: int, name: str, index0: int, p, c2: int = 0) -> np.ndarray:
    """1.0 where uniform_range(seed, name, index0, p.size, c2).reshape(p.shape) < p, else 0.0 (C order)."""
    return _core.bernoulli_sample(p, seed, PURPOSES[name], index0, int(c2) & 0xFFFFFFFF)


def normal(seed: int, name: str, index, c2: int = 0, c3: int = 0) -> np.ndarray:
    """One standard normal per entry of `index` (Box-Muller on words 0 and 1 of its block)."""
    w = words(seed, name, index, c2, c3)
    u1 = (w[..., 0].astype(np.float64) + 0.5) * 2.0 ** -32      # in (0, 1): the log is finite
    u2 = w[..., 1].astype(np.float64) * 2.0 ** -32
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
