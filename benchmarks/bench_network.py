# bench-timeout: 2400   (benchmarks/run.py: AIS with 500 chains x 10^4 steps per model needs more than --other-timeout)
"""phi^4 networks against scikit-learn's BernoulliRBM, and what the rest of the family does on digits.

    OPENBLAS_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/bench_network.py [--quick] [--sklearn-only]

Writes bench-results/network.json (--sklearn-only: part 1 alone, bench-results/network_sklearn.json)
and prints the tables of docs/network.md.

1. Binarised 8x8 digits (pixel/16 > 0.5), a Philox 80/20 held-out split, N_h = 64, learning rate
   0.05, batch 10, 10 persistent chains (sklearn keeps batch_size chains), k = 1, plain SGD, the
   same number of epochs. sklearn's fit loop is run batch by batch through BernoulliRBM._fit (what
   fit() does, without shuffling), so that epochs of the two alternate: sklearn epoch e, qftml
   epoch e, ... on one core; neither computes a per-epoch diagnostic (sklearn's fit with verbose=0,
   qftml's Trainer.epoch(recon=False), what PhiNetwork.fit runs; `qftml network` adds the
   reconstruction error and pseudo-likelihood of its history, timed separately as recon_s_per_epoch);
   time per epoch = median of process CPU times, the ratio is the median
   of the per-epoch ratios. Both trained models are evaluated by qftml's AIS (sklearn's weights loaded
   into a qftml Network: w = components_^T, lin = -intercepts): ln Z with its error and the check
   schedule (4x shorter, independent chains), held-out log-likelihood per image.
2. Real-valued digits, dequantised (pixel + u, u uniform from Philox, / 17: a density on [0, 1]^64):
   gaussian-bernoulli vs phi4-bernoulli vs phi4-phi4 (N_h = 64, Adam), held-out ln p with errors.
3. A stack of two bernoulli-bernoulli layers (64 -> 64 -> 32; layer 1 trained on exact samples of
   layer 0's hidden units): per-layer ln p of each layer's data, and samples down the stack.
"""
import json
import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sklearn_epochs(rbm, x, rng):
    """Set up like BernoulliRBM.fit, then return a function running one epoch (its loop body)."""
    from sklearn.utils import gen_even_slices

    rbm.components_ = np.asarray(rng.normal(0, 0.01, (rbm.n_components, x.shape[1])), order="F")
    rbm._n_features_out = rbm.components_.shape[0]
    rbm.intercept_hidden_ = np.zeros(rbm.n_components)
    rbm.intercept_visible_ = np.zeros(x.shape[1])
    rbm.h_samples_ = np.zeros((rbm.batch_size, rbm.n_components))
    n_batches = int(np.ceil(len(x) / rbm.batch_size))
    slices = list(gen_even_slices(n_batches * rbm.batch_size, n_batches, n_samples=len(x)))

    def epoch():
        for s in slices:
            rbm._fit(x[s], rng)
    return epoch


def from_sklearn(rbm):
    from qftml.network.model import Network
    from qftml.network.units import Layer

    nv, nh = rbm.components_.shape[1], rbm.components_.shape[0]
    return Network(Layer("bernoulli", nv, lin=-rbm.intercept_visible_),
                   Layer("bernoulli", nh, lin=-rbm.intercept_hidden_), rbm.components_.T.copy())


def evaluate(net, train, test, chains, steps, seed):
    from qftml.engine import rng
    from qftml.network import ais

    base = ais.base_from_data(net.visible.kind, train) if net.visible.kind != "phi4" else None
    t0 = time.process_time()
    main, check = ais.ais_check(net, chains, steps, rng.derive_seed(seed, "ais", 77), None, base)
    ll_te = ais.log_likelihood(net, test, main.log_z)
    ll_tr = ais.log_likelihood(net, train, main.log_z)
    return {"log_z": main.log_z, "log_z_err": main.error, "log_z_check": check.log_z, "log_z_check_err": check.error,
            "ll_test": float(ll_te.mean()), "ll_test_stat": float(ll_te.std(ddof=1) / np.sqrt(len(ll_te))),
            "ll_train": float(ll_tr.mean()), "ais_cpu_s": time.process_time() - t0}


def part1(x, tr, te, epochs, chains, steps):
    from sklearn.neural_network import BernoulliRBM

    from qftml.network.model import make_network
    from qftml.network.training import Trainer

    rbm = BernoulliRBM(n_components=64, learning_rate=0.05, batch_size=10, n_iter=epochs, random_state=0)
    sk_epoch = sklearn_epochs(rbm, x[tr], np.random.RandomState(0))  # sklearn's own generator, as in fit()
    net = make_network("bernoulli-bernoulli", 64, 64, seed=0, scale=0.01)
    trainer = Trainer(net, x[tr], batch_size=10, lr=0.05, method="pcd", k=1, chains=10, seed=0)
    t_sk, t_q, t_rec = [], [], []
    for _ in range(epochs):
        t0 = time.process_time()
        sk_epoch()
        t1 = time.process_time()
        trainer.epoch(recon=False)
        t2 = time.process_time()
        trainer.recon_error()  # what `qftml network` adds per epoch (not part of the training)
        t3 = time.process_time()
        t_sk.append(t1 - t0)
        t_q.append(t2 - t1)
        t_rec.append(t3 - t2)
    out = {"epochs": epochs, "sklearn_s_per_epoch": float(np.median(t_sk)), "qftml_s_per_epoch": float(np.median(t_q)),
           "speedup_median_of_ratios": float(np.median(np.array(t_sk) / np.array(t_q))),
           "recon_s_per_epoch": float(np.median(t_rec))}
    out["sklearn"] = evaluate(from_sklearn(rbm), x[tr], x[te], chains, steps, 1)
    out["qftml"] = evaluate(net, x[tr], x[te], chains, steps, 1)
    return out, net


def part2(digits, tr, te, epochs, chains, steps):
    from qftml.engine import rng
    from qftml.learning.optimizers import Schedule, make_optimizer
    from qftml.network.model import make_network
    from qftml.network.training import NetworkStop, Trainer

    u = rng.uniform(rng.derive_seed(0, "network_sample", 99), "network_sample", np.arange(digits.size))
    x = (digits + u.reshape(digits.shape)) / 17.0
    out = {}
    for preset in ("gaussian-bernoulli", "phi4-bernoulli", "phi4-phi4"):
        net = make_network(preset, 64, 64, seed=0, scale=0.01)
        mean, var = x[tr].mean(axis=0), x[tr].var(axis=0)
        net.visible.quad[:] = 0.5 / var
        net.visible.lin[:] = -mean / var
        if preset.startswith("phi4"):
            net.visible.quart[:] = 0.01
        opt = make_optimizer("adam", Schedule("constant", 0.003))
        trainer = Trainer(net, x[tr], batch_size=20, optimizer=opt, chains=100, seed=0)
        t0 = time.process_time()
        stopped = ""
        try:
            for _ in range(epochs):
                trainer.epoch()
        except NetworkStop as e:
            stopped = str(e)
        res = {"epochs": trainer.epochs_done, "train_cpu_s": time.process_time() - t0, "stopped": stopped}
        res.update(evaluate(net, x[tr], x[te], chains, steps, 2))
        out[preset] = res
        print(f"  {preset}: {res}", flush=True)
    return out


def part3(x, tr, te, layer0, epochs, chains, steps):
    from qftml.network.driver import next_data
    from qftml.network.model import make_network
    from qftml.network.training import Trainer

    h_tr, h_te = (next_data(layer0, x[r], "sample", 0, 0) for r in (tr, te))
    net1 = make_network("bernoulli-bernoulli", 64, 32, seed=0, scale=0.01, layer=1)
    trainer = Trainer(net1, h_tr, batch_size=10, lr=0.05, chains=10, seed=0, layer=1)
    for _ in range(epochs):
        trainer.epoch()
    return {"layer1": evaluate(net1, h_tr, h_te, chains, steps, 3)}, net1


def main():
    from sklearn.datasets import load_digits

    from qftml.network.data import holdout_split

    quick = "--quick" in sys.argv
    epochs, chains, steps = (3, 50, 200) if quick else (30, 500, 10000)
    digits = load_digits().data.astype(float)
    x = (digits / 16.0 > 0.5).astype(float)
    tr, te = holdout_split(len(x), 0.2, 0)
    results = {"load_avg": os.getloadavg(), "quick": quick}
    print("1. bernoulli-bernoulli vs sklearn BernoulliRBM (binarised digits)", flush=True)
    results["part1"], layer0 = part1(x, tr, te, epochs, chains, steps)
    print(json.dumps(results["part1"], indent=1), flush=True)
    if "--sklearn-only" in sys.argv:
        os.makedirs(os.path.join(ROOT, "bench-results"), exist_ok=True)
        with open(os.path.join(ROOT, "bench-results", "network_sklearn.json"), "w") as f:
            json.dump(results, f, indent=1)
        return
    print("2. real-valued (dequantised) digits", flush=True)
    results["part2"] = part2(digits, tr, te, epochs, chains // 2, steps // 5)
    print("3. stack of two layers", flush=True)
    results["part3"], net1 = part3(x, tr, te, layer0, epochs, chains, steps)
    print(json.dumps(results["part3"], indent=1), flush=True)
    os.makedirs(os.path.join(ROOT, "bench-results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench-results", "network.json"), "w") as f:
        json.dump(results, f, indent=1)
    if not quick:
        from qftml.network.stack import sample_stack
        from qftml.plots.network import data_vs_samples, receptive_fields

        img = os.path.join(ROOT, "docs", "img")
        receptive_fields(layer0.w, os.path.join(img, "network_receptive_fields.png"), units=range(24),
                         title="qftml bernoulli-bernoulli, digits: w[:, j]")
        data_vs_samples(x[te][:10], sample_stack([layer0, net1], 10, 0, sweeps=1000),
                        os.path.join(img, "network_stack_samples.png"))


if __name__ == "__main__":
    main()
