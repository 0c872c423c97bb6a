"""One test over every family's estimator (``train/estimator.py``, docs/architecture.md):
parameters round trip, save and ``fmnumpy.load``, a bit-exact resume at the same thread
count, ``steps`` as the total, a non-finite loss that stops and keeps the last good
checkpoint, and threads honoured (Numba's and BLAS's)."""
import numba
import numpy as np
import pytest
from threadpoolctl import threadpool_info

import fmnumpy
from fmnumpy import DiscreteFlowMatcher, FlowMatcher, FmnumpyError, ManifoldFlowMatcher
from fmnumpy.train.checkpoint import load_checkpoint
from fmnumpy.train.state import GRAD

# family -> (a small model, its data, batch size)
MODELS = {
    "euclidean": (lambda **kw: FlowMatcher(**dict(dict(hidden=(16,), warmup=2, seed=3), **kw)),
                  "2spirals", 16),
    "manifold": (lambda **kw: ManifoldFlowMatcher(**dict(dict(manifold="sphere", hidden=(16,),
                                                              warmup=2, seed=3), **kw)),
                 "vmf", 16),
    "discrete": (lambda **kw: DiscreteFlowMatcher(**dict(dict(vocab_size=8, hidden=(16,),
                                                              embed=4, warmup=2, seed=3), **kw)),
                 "discrete_checkerboard", 16),
}
FAMILIES = sorted(MODELS)


def same_state(a, b):
    keep = [r for r in range(5) if r != GRAD]          # the gradient is scratch, not saved
    np.testing.assert_array_equal(a.state_.buf[keep], b.state_.buf[keep])
    assert a.state_.step == b.state_.step and a.state_.losses == b.state_.losses


@pytest.mark.parametrize("family", FAMILIES)
def test_parameters_round_trip_and_refuse_in_one_line(family):
    make, _, _ = MODELS[family]
    fm = make()
    p = fm.get_params()
    assert set(p) == set(type(fm).param_names()) and "threads" in p
    assert type(fm)(**p).get_params() == p
    fm.set_params(lr=0.01, seed=7)
    assert fm.get_params() == dict(p, lr=0.01, seed=7) and fm.opt.lr == 0.01
    for bad in ({"bogus": 1}, {"lr": -1.0}, {"clip": -1.0}, {"threads": 0}):
        with pytest.raises(FmnumpyError) as e:
            fm.set_params(**bad)
        assert "\n" not in str(e.value)
        assert fm.get_params() == dict(p, lr=0.01, seed=7)      # unchanged


@pytest.mark.parametrize("family", FAMILIES)
def test_save_and_load_any_family(family, tmp_path):
    make, data, B = MODELS[family]
    fm = make().fit(data, steps=6, batch_size=B)
    path = fm.save(tmp_path / "m.npz")
    meta, _ = load_checkpoint(path)
    assert meta["family"] == family and meta["params"]["seed"] == 3
    back = fmnumpy.load(path)
    assert type(back) is type(fm) and back.get_params() == fm.get_params()
    assert (back.data_, back.batch_size_, back.total_steps_) == (fm.data_, B, 6)
    same_state(back, fm)
    np.testing.assert_array_equal(back.sample(20, seed=2), fm.sample(20, seed=2))


@pytest.mark.parametrize("family", FAMILIES)
def test_resume_is_bit_exact_and_steps_is_the_total(family, tmp_path):
    make, data, B = MODELS[family]
    whole = make().fit(data, steps=14, batch_size=B)
    part = make().fit(data, steps=14, batch_size=B, until=5)
    assert part.state_.step == 5
    part = fmnumpy.load(part.save(tmp_path / "p.npz"))
    part.fit(data, steps=14, batch_size=B, warm_start=True)      # 9 more: 14 in total
    same_state(part, whole)
    np.testing.assert_array_equal(part.state_.buf[GRAD], whole.state_.buf[GRAD])
    with pytest.raises(FmnumpyError, match="already taken 14 steps"):
        part.fit(data, steps=10, batch_size=B, warm_start=True)
    with pytest.raises(FmnumpyError, match="same batch size"):
        part.fit(data, steps=20, batch_size=B + 1, warm_start=True)
    part.fit(data, steps=16, batch_size=B, warm_start=True)
    assert part.state_.step == 16 and len(part.state_.losses) == 16


@pytest.mark.parametrize("family", FAMILIES)
def test_a_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(family, tmp_path):
    make, data, B = MODELS[family]
    path = tmp_path / "c.npz"
    fm = make(clip=0.0, warmup=0).fit(data, steps=4, batch_size=B, checkpoint=path,
                                      checkpoint_every=1)
    fm.set_params(lr=1e30)                       # Adam then moves every weight by ~1e30
    with pytest.raises(FmnumpyError) as e:
        fm.fit(data, steps=50, batch_size=B, warm_start=True, checkpoint=path,
               checkpoint_every=1)
    msg = str(e.value)
    bad = int(msg.split("non-finite at step ")[1].split(";")[0])
    assert "\n" not in msg and "last good checkpoint" in msg and bad > 4
    keep = [r for r in range(5) if r != GRAD]          # the gradient row is scratch
    assert fm.state_.step == bad - 1 and np.isfinite(fm.state_.buf[keep]).all()
    on_disk = fmnumpy.load(path)
    assert on_disk.state_.step == bad - 1 and np.isfinite(on_disk.state_.theta).all()
    assert np.isfinite(on_disk.state_.losses).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_threads_are_honoured_blas_included(family):
    make, data, B = MODELS[family]
    before = numba.get_num_threads()
    seen = []

    def look(model, k):
        blas = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
        seen.append((numba.get_num_threads(), max(blas)))

    make(threads=1).fit(data, steps=4, batch_size=B, callback=look, callback_every=2)
    assert seen == [(1, 1), (1, 1)]
    assert numba.get_num_threads() == before                   # restored after
