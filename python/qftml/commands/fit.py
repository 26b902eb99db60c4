"""`qftml fit CONFIG.toml [--replicas R] [--resume] [--set section.key=value ...] [--quiet]`.

Fit the couplings of an action S to data by maximum likelihood, i.e. by minimising KL(q||p)
(DESIGN 1.5). The run is qftml.learning.fit_driver.run_fit; this module parses and prints.

Exports: HELP, add_arguments(parser), run(args) (the cli contract), format_summary(result).

Config sections: [lattice] shape, grid; [sampler] algorithm, thermalize, hits, seed, step, start,
cluster, cluster_every; [model] field, init, couplings, w/a/b/r_range, learn, tied, extra, b_floor,
seed; [data] files, skip, limit, holdout, image_scale, image_resize, image_copies, image_noise,
truth; [training] optimizer, lr, schedule, ..., precondition, damping, max_step, epochs, samples,
sweeps_between, thermalize_after_update, replicas, method, cd_k, batch, l2, l2_center, ll_every,
ll_nodes, ll_samples, ll_thermalize, checkpoint_every; [output] path, plots, samples.
Output file and checkpoint: docs/fitting.md and qftml.learning.fit_driver.
"""
from __future__ import annotations

HELP = "fit an action S to data by maximum likelihood (KL(q||p)): couplings that seed `qftml sample`"


def add_arguments(parser):
    from qftml.cli import add_config_arguments

    add_config_arguments(parser)
    parser.add_argument("--replicas", type=int, default=None,
                        help="split the ranks into R replicas (chains; they split the data); R must divide the ranks")
    parser.add_argument("--resume", action="store_true", help="continue from <output.path>.ckpt")
    parser.epilog = "exit codes: 0 done, 2 invalid configuration or input data (nothing written)"


def run(args) -> int:
    from mpi4py import MPI

    from qftml.learning.fit_driver import load_fit_config, run_fit

    comm = MPI.COMM_WORLD
    cfg = load_fit_config(args.config, args.overrides, comm)
    result = run_fit(cfg, replicas=args.replicas, resume=args.resume, quiet=args.quiet, comm=comm)
    if comm.rank == 0 and not args.quiet:
        print(format_summary(result), flush=True)
    return 0


def format_summary(result) -> str:
    """Final couplings (with Cramer-Rao errors of tied families), the last log-likelihood, the files."""
    def coupling(k, st):
        cr = result.cramer_rao.get(k)
        return f"{k} = {st['mean']:.5f}" + (f" (Cramer-Rao +- {cr:.5f})" if cr is not None else
                                            f" (mean; std {st['std']:.2g})")

    lines = [f"fitted {result.epochs} epochs on {result.n_train} configurations ({result.n_holdout} held out): "
             + ", ".join(coupling(k, st) for k, st in result.stats.items() if k in result.learned)]
    ll = result.likelihood
    if ll:
        text = f"log-likelihood per site: train {ll['train']:.5f} +- {ll['train_err']:.5f}"
        if result.n_holdout:
            text += f", held out {ll['holdout']:.5f} +- {ll['holdout_err']:.5f}"
        lines.append(text)
    lines.append(f"wrote {result.path} (checkpoint {result.checkpoint})")
    lines += [f"wrote {p}" for p in result.plots]
    return "\n".join(lines)


__all__ = ["HELP", "add_arguments", "run", "format_summary"]
