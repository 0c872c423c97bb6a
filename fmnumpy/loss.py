"""The conditional flow-matching loss and its gradient with respect to v.

Dimension letters: B batch, D data dimension.

    L = 1/(B D) sum_{i,d} (v_id - ut_id)^2          (WORKLOADS.md, Lipman eq. 23)
    dL/dv_id = 2 (v_id - ut_id) / (B D)

Derivation: ``docs/gradients.md#loss``.
"""
from numba import njit


@njit(cache=True)
def cfm_loss_forward(v, ut):
    """Mean squared error between prediction v and target velocity ut (B, D)."""
    B, D = v.shape
    total = 0.0
    for i in range(B):
        for d in range(D):
            r = v[i, d] - ut[i, d]
            total += r * r
    return total / (B * D)


@njit(cache=True)
def cfm_loss_backward(v, ut, dv):
    """dv = dL/dv = 2 (v - ut) / (B D), written into dv (B, D)."""
    B, D = v.shape
    c = 2.0 / (B * D)
    for i in range(B):
        for d in range(D):
            dv[i, d] = c * (v[i, d] - ut[i, d])
