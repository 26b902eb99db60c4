"""phi^4 networks over ranks: the summed gradient, the AIS estimate and the command on 1, 2, 4 ranks
equal the single-rank results on the same data and chains (to the rounding of the sums)."""
import h5py
import numpy as np
import pytest
from mpi4py import MPI

from qftml.network import ais
from qftml.network.model import make_network
from qftml.network.training import Trainer


def _data():
    from sklearn.datasets import load_digits

    return load_digits().data[:200] / 16.0


@pytest.mark.mpi
@pytest.mark.parametrize("preset,method", [("bernoulli-bernoulli", "pcd"), ("phi4-bernoulli", "cd"),
                                           ("phi4-phi4", "pcd")])
def test_gradient_over_ranks_equals_the_single_rank_gradient(preset, method):
    comm = MPI.COMM_WORLD
    x = _data()
    if preset.startswith("bernoulli"):
        x = (x > 0.5).astype(float)
    grads, chains = [], []
    for c in (comm, None):
        net = make_network(preset, 64, 7, seed=2, scale=0.05)
        tr = Trainer(net, x, batch_size=37, chains=23, seed=3, method=method, k=2, comm=c)
        for _ in range(3):
            tr.step(np.arange(37) * 5 % 200)
        grads.append(tr.gradient(np.arange(37) + 11))
        chains.append(tr.global_chains())
    for name in grads[1]:
        np.testing.assert_allclose(grads[0][name], grads[1][name], rtol=1e-10, atol=1e-12, err_msg=name)
    np.testing.assert_allclose(chains[0], chains[1], rtol=1e-10, atol=1e-12)


@pytest.mark.mpi
def test_ais_over_ranks_equals_the_single_rank_estimate():
    net = make_network("phi4-bernoulli", 6, 5, seed=1, scale=0.4)
    a = ais.ais_log_z(net, 21, 50, seed=9, comm=MPI.COMM_WORLD)
    b = ais.ais_log_z(net, 21, 50, seed=9, comm=None)
    assert a.log_z == pytest.approx(b.log_z, rel=1e-12)
    np.testing.assert_allclose(a.log_w, b.log_w, rtol=1e-10, atol=1e-10)


@pytest.mark.mpi
def test_command_on_every_rank_count_gives_the_single_rank_network(tmp_path_factory):
    from qftml.cli import main

    comm = MPI.COMM_WORLD
    d = comm.bcast(str(tmp_path_factory.mktemp("net")) if comm.rank == 0 else None, root=0)
    text = f"""
[data]
source = "digits"
transform = "standardize"
max_samples = 200
[network]
preset = "phi4-bernoulli"
hidden = 6
[training]
epochs = 2
batch_size = 25
chains = 10
ais_chains = 10
ais_steps = 20
[output]
path = "{d}/OUT.h5"
plots = false
"""
    if comm.rank == 0:
        for name in ("world", "self"):
            with open(f"{d}/{name}.toml", "w") as f:
                f.write(text.replace("OUT", name))
    comm.Barrier()
    assert main(["network", f"{d}/world.toml", "--quiet"]) == 0
    if comm.rank == 0:  # the same run on one rank (COMM_SELF through the driver)
        from qftml.network.driver import load_network_config, run_network

        run_network(load_network_config(f"{d}/self.toml"), quiet=True, comm=MPI.COMM_SELF)
        with h5py.File(f"{d}/world.h5") as fw, h5py.File(f"{d}/self.h5") as fs:
            np.testing.assert_allclose(fw["layers/0/w"][()], fs["layers/0/w"][()], rtol=1e-9, atol=1e-12)
            assert fw.attrs["n_ranks"] == comm.size
    comm.Barrier()
