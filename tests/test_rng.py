"""Philox-4x32-10 against the published known-answer vectors (Random123 kat_vectors)."""
from qftml import _core


def test_philox_known_answers():
    assert _core.philox4x32_10([0, 0, 0, 0], [0, 0]) == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    m = 0xFFFFFFFF
    assert _core.philox4x32_10([m] * 4, [m, m]) == [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]
    pi = [0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344]
    assert _core.philox4x32_10(pi, [0xA4093822, 0x299F31D0]) == [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]


def test_driver_streams_are_the_engine_philox_over_arrays():
    import numpy as np

    from qftml.engine import rng

    idx = np.array([0, 1, 2 ** 32 + 5, 2 ** 63 + 11], dtype=np.uint64)
    for seed, name, c2, c3 in [(0, "rg_tie", 0, 0), (2 ** 33 + 17, "irg_noise", 7, 3)]:
        w = rng.words(seed, name, idx, c2, c3)
        for n, row in zip(idx.tolist(), w):
            key = [seed & 0xFFFFFFFF, ((seed >> 32) ^ (rng.purpose(name) * 0x9E3779B9)) & 0xFFFFFFFF]
            assert list(row) == _core.philox4x32_10([n & 0xFFFFFFFF, n >> 32, c2, c3], key)
        u = rng.uniform(seed, name, idx, c2, c3)
        bits = (w[:, 0].astype(np.uint64) << np.uint64(20)) ^ (w[:, 1].astype(np.uint64) >> np.uint64(12))
        assert np.array_equal(u, bits.astype(np.float64) * 2.0 ** -52)
    u = rng.uniform(5, "ais", np.arange(100_000))
    assert u.min() >= 0 and u.max() < 1 and abs(u.mean() - 0.5) < 4 * (1 / np.sqrt(12 * 1e5))
    z = rng.normal(5, "ais", np.arange(100_000))
    assert abs(z.mean()) < 4 / np.sqrt(1e5) and abs(z.var() - 1) < 4 * np.sqrt(2 / 1e5)


def test_derived_seeds_differ_across_purposes_and_ids():
    import pytest

    from qftml.engine import rng

    seeds = {rng.derive_seed(7, p, i, j) for p in ("ti_node", "learn_chain") for i in range(50) for j in range(20)}
    assert len(seeds) == 2 * 50 * 20
    assert rng.derive_seed(7, "ti_node", 3) == rng.derive_seed(7, "ti_node", 3)
    with pytest.raises(KeyError, match="registered"):
        rng.derive_seed(7, "no_such_purpose")
