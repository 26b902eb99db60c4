"""`qftml network CONFIG.toml [--resume] [--set section.key=value ...] [--quiet]`.

Train a phi^4 network (presets gaussian-gaussian, gaussian-bernoulli, bernoulli-bernoulli,
phi4-bernoulli, phi4-phi4) or a greedy stack ([[layers]]) on data, and evaluate it by AIS. The run
is qftml.network.driver.run_network; this module parses and prints.

Config sections: [data] source, path, transform, threshold, holdout, max_samples; [network] preset,
hidden, v_quad, v_quart, h_quad, h_quart (or [[layers]] tables with these keys and epochs, lr);
[training] optimizer, lr, schedule, ..., epochs, batch_size, method, k, chains, seed, init_scale, l2,
learn, quad_floor, quart_floor, propagate, ais_every, ais_chains, ais_steps, checkpoint_every;
[output] path, plots. Output layout: docs/network.md and qftml.network.driver.
"""
from __future__ import annotations

HELP = "train phi^4 neural networks (RBM family, stacks) on data; ln Z and log-likelihood by AIS"


def add_arguments(parser):
    from qftml.cli import add_config_arguments

    add_config_arguments(parser)
    parser.add_argument("--resume", action="store_true", help="continue from <output.path>.ckpt")
    parser.epilog = ("exit codes: 0 done, 1 stopped (an update would make the network unnormalisable; the last "
                     "valid couplings are written), 2 invalid configuration or input (nothing written)")


def run(args) -> int:
    from mpi4py import MPI

    from qftml.network.driver import load_network_config, run_network

    comm = MPI.COMM_WORLD
    cfg = load_network_config(args.config, args.overrides, comm)
    result = run_network(cfg, resume=args.resume, quiet=args.quiet, comm=comm)
    if comm.rank == 0 and not args.quiet:
        print(format_summary(result), flush=True)
    if result.stopped and comm.rank == 0:
        import sys

        print(f"qftml network: stopped: {result.stopped}", file=sys.stderr, flush=True)
    return 1 if result.stopped else 0


def format_summary(result) -> str:
    lines = []
    for k, r in enumerate(result.layers):
        lines.append(f"layer {k} ({r.net.preset}, {r.net.visible.n} x {r.net.hidden.n}, {r.epochs} epochs): "
                     f"ln Z = {r.log_z:.4f} +- {r.log_z_err:.4f} (check {r.log_z_check:.4f} +- "
                     f"{r.log_z_check_err:.4f}); ln p per sample: held-out {r.ll_test:.4f} +- {r.ll_test_err:.4f}, "
                     f"train {r.ll_train:.4f}")
    lines.append(f"wrote {result.path} (checkpoint {result.checkpoint})")
    lines += [f"wrote {p}" for p in result.plots]
    return "\n".join(lines)


__all__ = ["HELP", "add_arguments", "run", "format_summary"]
