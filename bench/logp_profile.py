"""Where one evaluation of the likelihood's field goes: the network with its exact
divergence (``likelihood.mlp_div_field``: forward pass and D tangent passes) on one
particle chunk, one thread, against its parts: the input features and their
tangents, a hidden layer's matrix products (forward, and the D tangent rows stacked),
the activation pass with its tangent rule; and the sampler's field (``mlp.velocity``)
on the same chunk.

    python bench/logp_profile.py [--checkpoint results/checkpoint.npz] [-B 1667]

Without a checkpoint the default model is freshly initialised (the cost does not
depend on the weights).  Prints the mean microseconds of each over 200 calls and the
matrix products' GFLOP/s; a bound for ``log_prob``: the hidden layers' products alone.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def timed(f, n=200):
    f()
    t0 = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - t0) / n * 1e6


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("-B", type=int, default=1667, help="particles per chunk (10,000 on 2 "
                    "threads make chunks of 1,667)")
    a = ap.parse_args(argv)
    import numba
    numba.set_num_threads(1)
    from fmnumpy.threads import limit_blas
    limit_blas(1)
    from fmnumpy import FlowMatcher
    from fmnumpy.euclidean import likelihood as lik
    from fmnumpy.nn.tangents import activation_forward_jvp
    from fmnumpy.nn.mlp import Workspace, input_features, input_tangents, velocity
    if a.checkpoint:
        fm = FlowMatcher.load(a.checkpoint)
    else:
        fm = FlowMatcher().fit("2spirals", steps=1, progress=False)
    spec, B = fm.spec_, a.B
    theta = fm.ema_.astype(np.float32)
    params = lik.mlp_div_params(theta, spec, B, np.float32)
    _, sizes, kind, feats, X, A, U, T1, T2 = params
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, spec.dim)).astype(np.float32)
    t = np.full(B, 0.5, np.float32)
    v, div = np.zeros((B, spec.dim), np.float32), np.zeros(B, np.float32)
    H, D = int(max(spec.hidden)), spec.dim
    h, W = rng.random((B, H), np.float32), rng.random((H, H), np.float32)
    dh = rng.random((D * B, H), np.float32)
    z, dz, s = np.empty((B, H), np.float32), np.empty((D * B, H), np.float32), np.empty(H, np.float32)
    ws = Workspace(spec.sizes, B)
    rows = {
        "likelihood field (forward + tangents + divergence)":
            timed(lambda: lik.mlp_div_field(params, x, t, v, div)),
        "input features and their tangents":
            timed(lambda: (input_features(x, t, feats, X), input_tangents(X, feats, U))),
        f"one {H} x {H} product, forward rows": timed(lambda: np.dot(h, W, z)),
        f"one {H} x {H} product, {D} tangent rows each": timed(lambda: np.dot(dh, W, dz)),
        "one activation pass with its tangent rule":
            timed(lambda: activation_forward_jvp(z, dz, kind, s)),
        "sampler field (mlp.velocity)":
            timed(lambda: velocity(theta, spec.sizes, spec.kind, spec.feats, x, t, ws.X, ws.A,
                                   ws.Z)),
    }
    n_hh = len(spec.hidden) - 1                        # hidden-to-hidden layers
    print(f"model {[int(n) for n in spec.sizes]}, {B} particles, 1 thread")
    for k, us in rows.items():
        print(f"  {k}: {us:.0f} us")
    fwd, tan = rows[f"one {H} x {H} product, forward rows"], rows[f"one {H} x {H} product, {D} tangent rows each"]
    print(f"  {H} x {H} products: {2 * B * H * H / fwd / 1e3:.0f} GFLOP/s forward, "
          f"{2 * D * B * H * H / tan / 1e3:.0f} GFLOP/s tangents; the {n_hh} hidden-to-hidden "
          f"layers' products take {n_hh * (fwd + tan):.0f} us of the field's "
          f"{rows['likelihood field (forward + tangents + divergence)']:.0f} us")


if __name__ == "__main__":
    main()
