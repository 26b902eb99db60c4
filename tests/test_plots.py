"""`qftml plot`: every PNG is written, is a real image with content, and the command runs on rank 0 only."""
import matplotlib.image as mpimg
import numpy as np
import pytest
from mpi4py import MPI

import qftml
from qftml.io.ensembles import open_ensemble
from qftml.plots.ensemble import plot_all

from test_analysis import write_ensemble  # noqa: E402  (tests/ is on sys.path under pytest)


def make_file(path, field="real", store_configs=True, shape=(12, 8)):
    lat = qftml.Lattice(shape, comm=MPI.COMM_SELF)
    if field == "ising":
        act = qftml.Action.homogeneous(lat, kappa=0.44, field="ising")
    else:
        act = qftml.Action.homogeneous(lat, kappa=1.0, mu2=-0.9515, lam=0.7)
    s = qftml.Sampler(act, seed=4, algorithm="metropolis")
    s.thermalize(100)
    write_ensemble(path, s, n_records=300, every=2, store_configs=store_configs)
    return path


def assert_png_with_content(path):
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 200
    assert np.std(img[..., :3]) > 0.05  # not a blank canvas


@pytest.mark.parametrize("field", ["real", "ising"])
def test_plot_command_writes_all_pngs(tmp_path, field, capsys):
    from qftml.cli import main

    path = make_file(str(tmp_path / f"{field}.h5"), field=field)
    out = tmp_path / "plots"
    assert main(["plot", path, "--out", str(out), "--therm", "20"]) == 0
    listed = capsys.readouterr().out.split()
    names = {"history.png", "histogram_m.png", "correlator.png", "configuration.png"}
    assert {p.split("/")[-1] for p in listed} == names
    for name in names:
        assert_png_with_content(out / name)


def test_plot_without_configs_and_default_dir(tmp_path):
    from qftml.cli import main

    path = make_file(str(tmp_path / "nocfg.h5"), store_configs=False)
    assert main(["plot", path, "--quiet"]) == 0
    out = tmp_path / "nocfg_plots"
    assert sorted(p.name for p in out.iterdir()) == ["correlator.png", "histogram_m.png", "history.png"]


def test_plot_all_on_3d_lattice(tmp_path):
    path = make_file(str(tmp_path / "d3.h5"), shape=(6, 4, 4))
    with open_ensemble(path) as ens:
        written = plot_all(ens, str(tmp_path / "p3"))
    assert len(written) == 4
    for p in written:
        assert_png_with_content(p)


def test_plot_missing_file_is_a_clean_error(tmp_path, capsys):
    from qftml.cli import main

    assert main(["plot", str(tmp_path / "nope.h5")]) == 2
    assert "no such file" in capsys.readouterr().err


@pytest.mark.mpi
def test_analyze_and_plot_run_on_rank_zero_only(tmp_path, comm, capsys):
    from qftml.cli import main

    base = comm.bcast(str(tmp_path) if comm.rank == 0 else None, root=0)
    path = base + "/e.h5"
    if comm.rank == 0:
        make_file(path)
    comm.Barrier()
    out = base + "/mpiplots"
    assert main(["analyze", path, "--json"]) == 0
    assert main(["plot", path, "--out", out]) == 0
    text = capsys.readouterr().out
    if comm.rank == 0:
        assert '"derived"' in text and "history.png" in text
    else:
        assert text == ""  # other ranks do nothing
    comm.Barrier()
