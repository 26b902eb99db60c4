"""Block-spin renormalisation-group transformations R_b on the distributed lattice (DESIGN 1.7).

`real` fields (block average with field rescaling zeta):

    phi'_X = zeta * b^-d sum_{x in block X} phi_x          (blocks of b^d sites, X = floor(x / b))

`ising` fields (majority rule): s'_X = sign(sum_{x in X} s_x), and a tie (sum = 0, possible for
even b^d) is broken by a fair coin: the engine's Philox-4x32-10 (qftml.engine.rng.uniform, purpose
"rg_tie") at counter (global block index, configuration index, level). The coin depends only on the
global block, so the blocked configuration is the same bit for bit for any process grid.

Every rank blocks its own block of the lattice with numpy; the process grid is kept and the local
extents shrink by b, so every local extent must be divisible by b (b^k for k levels): otherwise a
ValueError names the offending extent.

Exports:
    global_index(shape, offset, local_shape)           lexicographic global site index of a block
    check_blockable(shape, grid, b, levels=1)          ValueError unless every local extent / b^levels
    block_local(local, b=2, field="real", scale=1.0, seed=0, offset=None, shape=None, config=0, level=0)
    block_lattice(lattice, b=2) -> Lattice              the coarse lattice: shape / b, same grid and comm
    block_field(lattice, local, b=2, field="real", scale=1.0, seed=0, config=0, level=0)
    block_ensemble(lattice, local_configs, b=2, ..., first_config=0)   (n, *local) -> (n, *local / b)
"""
from __future__ import annotations

import numpy as np

from qftml.engine import rng


def global_index(shape, offset, local_shape) -> np.ndarray:
    """Lexicographic global index (row major over `shape`) of every site of a local block."""
    idx = np.zeros(tuple(local_shape), dtype=np.uint64)
    stride = 1
    for mu in reversed(range(len(shape))):
        coord = np.arange(offset[mu], offset[mu] + local_shape[mu], dtype=np.uint64) * np.uint64(stride)
        idx += coord.reshape([-1 if nu == mu else 1 for nu in range(len(shape))])
        stride *= int(shape[mu])
    return idx


def check_blockable(shape, grid, b: int, levels: int = 1) -> None:
    """ValueError unless every local extent shape[mu] / grid[mu] is divisible by b**levels."""
    if not isinstance(b, (int, np.integer)) or b < 2:
        raise ValueError(f"blocking factor b must be an integer >= 2, got {b!r}")
    factor = int(b) ** int(levels)
    for mu, (L, g) in enumerate(zip(shape, grid)):
        if L % g or (L // g) % factor:
            raise ValueError(
                f"cannot block {levels} time(s) by b = {b}: direction {mu} has extent {L} over "
                f"{g} rank(s) (local extent {L / g:g}), which is not divisible by b^{levels} = {factor}; "
                f"choose L and the process grid so that L / grid is a multiple of {factor}")


def _block_sums(local: np.ndarray, b: int) -> np.ndarray:
    """Sums over the b^d blocks of one configuration (all axes blocked)."""
    d = local.ndim
    shape = []
    for n in local.shape:
        shape += [n // b, b]
    return local.reshape(shape).sum(axis=tuple(range(1, 2 * d, 2)))


def block_local(local: np.ndarray, b: int = 2, field: str = "real", scale: float = 1.0, seed: int = 0,
                offset=None, shape=None, config: int = 0, level: int = 0) -> np.ndarray:
    """R_b of one rank's block (natural order) of one configuration.

    `offset`/`shape` are the block's global origin and the global lattice extents (fine sites);
    they are needed only for the ising tie-breaking coin (defaults: the block is the whole lattice).
    """
    local = np.asarray(local, dtype=np.float64)
    b = int(b)
    for mu, n in enumerate(local.shape):
        if n % b:
            raise ValueError(f"local extent {n} in direction {mu} is not divisible by the blocking factor {b}")
    sums = _block_sums(local, b)
    if field == "real":
        return sums * (float(scale) / b ** local.ndim)
    if field != "ising":
        raise ValueError(f"field must be 'real' or 'ising', got {field!r}")
    shape = local.shape if shape is None else tuple(shape)
    offset = (0,) * local.ndim if offset is None else tuple(offset)
    out = np.sign(sums)
    ties = out == 0
    if np.any(ties):
        coarse_shape = tuple(L // b for L in shape)
        coarse_offset = tuple(o // b for o in offset)
        idx = global_index(coarse_shape, coarse_offset, sums.shape)[ties]
        coin = rng.uniform(seed, "rg_tie", idx, c2=config, c3=level)
        out[ties] = np.where(coin < 0.5, -1.0, 1.0)
    return out


def block_lattice(lattice, b: int = 2):
    """The coarse lattice of R_b: global shape / b, the same process grid and communicator."""
    from qftml.engine.lattice import Lattice

    check_blockable(lattice.shape, lattice.grid, b)
    return Lattice(tuple(L // b for L in lattice.shape), comm=lattice.comm, grid=lattice.grid)


def block_field(lattice, local: np.ndarray, b: int = 2, field: str = "real", scale: float = 1.0,
                seed: int = 0, config: int = 0, level: int = 0) -> np.ndarray:
    """R_b of this rank's block of one configuration on `lattice` (checks divisibility first)."""
    check_blockable(lattice.shape, lattice.grid, b)
    return block_local(local, b, field, scale, seed, lattice.local_offset, lattice.shape, config, level)


def block_ensemble(lattice, local_configs: np.ndarray, b: int = 2, field: str = "real", scale: float = 1.0,
                   seed: int = 0, first_config: int = 0, level: int = 0) -> np.ndarray:
    """R_b of every configuration of this rank's blocks, shape (n, *local) -> (n, *local / b).

    Configuration i uses tie-breaking counter first_config + i, so blocking an ensemble in pieces
    gives the same result as blocking it at once.
    """
    local_configs = np.asarray(local_configs, dtype=np.float64)
    check_blockable(lattice.shape, lattice.grid, b)
    if local_configs.shape[1:] != tuple(lattice.local_shape):
        raise ValueError(f"configurations have local shape {local_configs.shape[1:]}, "
                         f"the lattice block is {lattice.local_shape}")
    n = local_configs.shape[0]
    if field == "real":
        d = lattice.ndim
        shape = [n]
        for m in lattice.local_shape:
            shape += [m // b, b]
        return local_configs.reshape(shape).sum(axis=tuple(range(2, 2 * d + 1, 2))) * (float(scale) / b ** d)
    return np.stack([block_field(lattice, c, b, field, scale, seed, first_config + i, level)
                     for i, c in enumerate(local_configs)]) if n else \
        np.zeros((0,) + tuple(m // b for m in lattice.local_shape))
