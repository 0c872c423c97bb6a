"""``FlowMatcher()`` with every default on scikit-learn's 64-D digits against the 2-D
default on 2spirals, alternated in one window (bench only: ``pip install scikit-learn``):

    python bench/digits_default.py [--pairs 2]

The digits are split as in bench/x_freqs_dims.py (1,297 training rows scaled to [0, 1],
500 test rows); the W2 of 500 samples to the test rows is printed beside the floor (500
training rows against the test rows, 20 draws).
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from x_freqs_dims import digits_split, floor  # noqa: E402

from fmnumpy import FlowMatcher  # noqa: E402
from fmnumpy.metrics import w2  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pairs", type=int, default=2)
    a = ap.parse_args(argv)
    train, test = digits_split()
    for _ in range(a.pairs):
        for name, data in (("digits", train), ("2spirals", "2spirals")):
            fm = FlowMatcher()
            t0 = time.perf_counter()
            fm.fit(data)
            line = (f"{name}: {fm.spec_.sizes[0]} inputs, trained 20000 steps in "
                    f"{time.perf_counter() - t0:.1f} s")
            if name == "digits":
                line += f", W2 of 500 samples to the 500 test rows {w2(fm.sample(500), test):.4f}"
            print(line, flush=True)
    mean, sd = floor("digits")
    print(f"digits floor: {mean:.4f} (sd {sd:.4f} over 20 draws)")


if __name__ == "__main__":
    main()
