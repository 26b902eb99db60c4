"""`qftml learn CONFIG.toml [--replicas R] [--resume] [--set section.key=value ...] [--quiet]`.

Learn the couplings of an inhomogeneous action S by minimising F = <A - S>_p + F_S >= F_A
(DESIGN 1.3). The run is qftml.learning.driver.run_learn; this module parses and prints.

Exports: HELP, add_arguments(parser), run(args) (the cli contract), load_learn_config (re-exported
from qftml.learning.driver), format_summary(result).

Config sections: [lattice] shape, grid; [sampler] algorithm, thermalize (initial), hits, seed, step,
start; [target] as [action] (kappa, mu2, lam, h, extra, g, field, or couplings = "file.h5");
[model] init, w_range/a_range/b_range/r_range, couplings, learn, tied, extra, b_floor, seed;
[training] optimizer, lr, schedule, ..., epochs, samples, sweeps_between, thermalize_after_update,
replicas, precondition, f_every, f_nodes, f_samples, f_thermalize, f_target, checkpoint_every,
compare; [output] path, plots. The output file and the checkpoint "<path>.ckpt" are described in
docs/learning.md and qftml.learning.driver.
"""
from __future__ import annotations

from qftml.learning.driver import load_learn_config

HELP = "learn an action S by minimising the variational free energy F = <A - S> + F_S >= F_A (KL(p||q))"


def add_arguments(parser):
    from qftml.cli import add_config_arguments

    add_config_arguments(parser)
    parser.add_argument("--replicas", type=int, default=None,
                        help="split the ranks into R replicas (independent chains); R must divide the ranks")
    parser.add_argument("--resume", action="store_true", help="continue from <output.path>.ckpt")
    parser.epilog = "exit codes: 0 done, 2 invalid configuration or input (nothing written)"


def run(args) -> int:
    from mpi4py import MPI

    from qftml.learning.driver import run_learn

    comm = MPI.COMM_WORLD
    cfg = load_learn_config(args.config, args.overrides, comm)
    replicas = args.replicas if args.replicas is not None else cfg["training"]["replicas"]
    result = run_learn(cfg, replicas=replicas, resume=args.resume, quiet=args.quiet, comm=comm)
    if comm.rank == 0 and not args.quiet:
        print(format_summary(result), flush=True)
    return 0


def format_summary(result) -> str:
    """The text printed at the end: final couplings, the last bound, the comparison, the files."""
    from qftml.learning.driver import format_comparison

    lines = [f"learned {result.epochs} epochs: " + ", ".join(
        f"{k} = {st['mean']:.5f} (std {st['std']:.2g})" for k, st in result.stats.items() if k in result.learned)]
    if result.free_energy:
        fe = result.free_energy
        lines.append(f"bound at epoch {fe['epoch']}: F = {fe['F']:.4f} +- {fe['F_err']:.4f}")
    if result.f_target:
        lines.append(f"F_A = {result.f_target[0]:.4f} +- {result.f_target[1]:.4f}")
    if result.comparison:
        lines.append(format_comparison(result.comparison))
    lines.append(f"wrote {result.path} (checkpoint {result.checkpoint})")
    lines += [f"wrote {p}" for p in result.plots]
    return "\n".join(lines)


__all__ = ["HELP", "add_arguments", "run", "load_learn_config", "format_summary"]
