"""The conditional flow-matching loss and its gradient with respect to v.

Dimension letters: B batch, D data dimension.

    L = 1/(B D) sum_{i,d} (v_id - ut_id)^2          (bench/README.md, Workloads, Lipman eq. 23)
    dL/dv_id = 2 (v_id - ut_id) / (B D)

Derivation: ``docs/gradients.md#loss``.
"""
from numba import njit


def cfm_element(v, ut, c):
    """One coordinate of the loss: ((v - ut)^2, dL/dv = c (v - ut)) with c = 2 / (B D),
    so that L = sum (v - ut)^2 / (B D).  Compiled for the CPU here and for the GPU
    in ``cuda/step.py``."""
    r = v - ut
    return r * r, c * r


cfm_element_cpu = njit(cache=True, inline="always")(cfm_element)


@njit(cache=True)
def cfm_loss_forward(v, ut):
    """Mean squared error between prediction v and target velocity ut (B, D)."""
    B, D = v.shape
    total = 0.0
    for i in range(B):
        for d in range(D):
            total += cfm_element_cpu(v[i, d], ut[i, d], 0.0)[0]
    return total / (B * D)


@njit(cache=True)
def cfm_loss_backward(v, ut, dv):
    """dv = dL/dv = 2 (v - ut) / (B D), written into dv (B, D)."""
    B, D = v.shape
    c = 2.0 / (B * D)
    for i in range(B):
        for d in range(D):
            dv[i, d] = cfm_element_cpu(v[i, d], ut[i, d], c)[1]
