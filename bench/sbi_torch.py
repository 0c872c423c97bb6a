"""The sbi package's side of bench/sbi_bench.py, run with a Python that has torch and sbi
(``--torch-python``; never a requirement of fmnumpy): train NPE (its default MAF) or FMPE
(its default MLP vector field) on the simulations in IN.npz (theta, x, and the prior: the
box low, high, or a zero-mean Gaussian's precision matrix), with sbi's defaults (early stopping on a tenth held out), then 10,000 posterior
samples for each observation in IN.npz's obs; writes OUT.npz (samples (O, n, d)) and prints
one JSON line (training seconds, epochs).

    python bench/sbi_torch.py npe IN.npz OUT.npz SEED [THREADS]
"""
import json
import sys
import time

import numpy as np
import torch


def main(method, src, dst, seed, threads=2):
    from sbi.inference import FMPE, NPE
    from sbi.utils import BoxUniform
    torch.manual_seed(int(seed))
    torch.set_num_threads(int(threads))
    d = np.load(src)
    theta = torch.tensor(d["theta"], dtype=torch.float32)
    x = torch.tensor(d["x"], dtype=torch.float32)
    dim = theta.shape[1]
    if "low" in d:
        prior = BoxUniform(torch.full((dim,), float(d["low"])), torch.full((dim,), float(d["high"])))
    else:
        prior = torch.distributions.MultivariateNormal(
            torch.zeros(dim), precision_matrix=torch.tensor(d["precision"], dtype=torch.float32))
    inference = (NPE if method == "npe" else FMPE)(prior=prior, show_progress_bars=False)
    t0 = time.perf_counter()
    estimator = inference.append_simulations(theta, x).train()
    train_s = time.perf_counter() - t0
    posterior = inference.build_posterior(estimator)
    n = int(d["n"])
    out = []
    t0 = time.perf_counter()
    for xo in d["obs"] if n > 0 else ():           # n = 0: training time alone
        s = posterior.sample((n,), x=torch.tensor(xo, dtype=torch.float32).reshape(1, -1),
                             show_progress_bars=False)
        out.append(s.numpy().astype(np.float64))
    sample_s = time.perf_counter() - t0
    np.savez(dst, samples=np.stack(out) if out else np.zeros((0, n, dim)))
    print(json.dumps({"train_s": train_s, "sample_s": sample_s,
                      "epochs": int(inference._summary["epochs_trained"][-1])}))


if __name__ == "__main__":
    main(*sys.argv[1:])
