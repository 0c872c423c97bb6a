"""Named settings of ``ManifoldFlowMatcher``, each chosen on the validation data of
the benchmark it names, with the table that chose it: the model's parameters and
fit's ``steps`` (and ``batch_size``).  A user's own options override them
(``fmnumpy train --preset NAME``; in Python ``model, run = preset(NAME)``, then
``ManifoldFlowMatcher(**model).fit(x, **run)``)."""
from fmnumpy.errors import FmnumpyError

RUN = ("steps", "batch_size")           # the arguments of fit; the rest are the model's

PRESETS = {
    # the earth event catalogues: on the validation splits of all four, 4 octaves of
    # plane waves and 30,000 steps beat the defaults by 0.34 to 1.65 nats (volcano alone
    # prefers x_freqs 6); bench/results/earth_select.md, docs/manifolds.md#earth-events
    "earth": {"x_freqs": 4, "steps": 30000},
}


def preset(name):
    """(model parameters, fit arguments) of the preset ``name`` (:data:`PRESETS`):
    ``fm = ManifoldFlowMatcher(**model); fm.fit(x, **fit)``."""
    if name not in PRESETS:
        raise FmnumpyError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    run = {k: v for k, v in PRESETS[name].items() if k in RUN}
    return {k: v for k, v in PRESETS[name].items() if k not in run}, run
