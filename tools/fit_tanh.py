"""Fit the rational approximation of tanh used by fmnumpy.activations.

    python tools/fit_tanh.py

tanh is odd, so it is approximated on [0, c] as x P(x^2) / Q(x^2) with P of degree
5 and Q of degree 3 in u = x^2 (Q(0) = 1), and clamped to +/-c beyond, where c is
the point past which float32 tanh rounds to +/-1 within a few ulps.  The fit
minimises the maximum relative error by iteratively reweighted linear least
squares (Lawson's algorithm) on the linearised residual x P(u) - tanh(x) Q(u),
which is linear in the coefficients.  Prints the coefficients and the errors in
float64 and in float32 arithmetic (the coefficients are stored as float32).
"""
import numpy as np

CLAMP = 7.90531110763549805      # float32: tanh(x) rounds to 1 within ~4 ulp for x >= CLAMP
N_P, N_Q = 6, 4                  # coefficients of P (p0..p5) and of Q (q0 = 1, q1..q3)


def fit(n_p=N_P, n_q=N_Q, iters=60):
    """-> p (n_p,), q (n_q,) with q[0] = 1, and the max relative error on [0, c]."""
    x = np.concatenate([np.linspace(1e-5, 1.0, 5000), np.linspace(1.0, CLAMP, 20000)])
    y = np.tanh(x)
    s = (x / CLAMP) ** 2                 # u / c^2 in [0, 1]: a well-conditioned basis
    # x P(s) - tanh(x) (q1 s + q2 s^2 + ...) = tanh(x): linear in (p, q1, q2, ...)
    M = np.stack([x * s ** k for k in range(n_p)] + [-y * s ** k for k in range(1, n_q)], 1)
    q, w, best = np.ones(1), np.ones_like(x), None
    for _ in range(iters):
        # divide each row by tanh(x) Q_prev(s) so the residual approximates the
        # relative error (Sanathanan-Koerner), and weight it by w (Lawson)
        r = np.sqrt(w) / (y * np.polyval(q[::-1], s))
        sol = np.linalg.lstsq(M * r[:, None], y * r, rcond=None)[0]
        p, q = sol[:n_p], np.concatenate([[1.0], sol[n_p:]])
        err = np.abs(x * np.polyval(p[::-1], s) / np.polyval(q[::-1], s) / y - 1.0)
        if best is None or err.max() < best[2]:
            best = (p, q, err.max())
        w = w * err
        w /= w.mean()
    p, q, e = best
    scale = CLAMP ** (-2.0 * np.arange(max(n_p, n_q)))       # back to powers of u = x^2
    return p * scale[:n_p], q * scale[:n_q], e


def evaluate(p, q, x):
    """x P(x^2) / Q(x^2) with clamping, in the dtype of x, coefficients cast to it."""
    c = x.dtype.type(CLAMP)
    x = np.clip(x, -c, c)
    u = x * x
    P = np.zeros_like(x)
    for k in range(len(p) - 1, -1, -1):
        P = P * u + x.dtype.type(p[k])
    Q = np.zeros_like(x)
    for k in range(len(q) - 1, -1, -1):
        Q = Q * u + x.dtype.type(q[k])
    return x * P / Q


if __name__ == "__main__":
    p, q, e = fit()
    print("P =", ", ".join(repr(float(v)) for v in p))
    print("Q =", ", ".join(repr(float(v)) for v in q))
    print(f"max relative error of the fit on [0, c]: {e:.3g}")
    xs = np.linspace(-12, 12, 480001)
    for dt in (np.float64, np.float32):
        p32, q32 = np.float32(p).astype(np.float64), np.float32(q).astype(np.float64)
        got = evaluate(p32, q32, xs.astype(dt)).astype(np.float64)
        print(f"{np.dtype(dt).name} evaluation, float32 coefficients: max abs error "
              f"{np.abs(got - np.tanh(xs)).max():.3g}")
