"""Flow matching on the sphere: train on a mixture of von Mises-Fisher blobs and look
at it on a map, in 3D, as a GIF and as a density.

    python examples/sphere.py            # about a minute on 2 CPU cores

Writes examples_out/sphere.png (Mollweide map and 3D view), examples_out/sphere.gif
(points flowing from the uniform distribution at t = 0 to the data at t = 1) and
examples_out/sphere_density.png (the model's density beside the exact one).
"""
import os

import numpy as np

from fmnumpy import ManifoldFlowMatcher
from fmnumpy.manifold import datasets as mdata
from fmnumpy.plots import manifold as mplots
from fmnumpy.manifold.estimator import grid_mass, grid_points
from fmnumpy.manifold.manifolds import SPHERE
from fmnumpy.manifold.metrics import geodesic_w2

OUT = "examples_out"

fm = ManifoldFlowMatcher("sphere")                  # its defaults: 3 x 256, lr 2e-3
fm.fit("vmf", progress=True)                          # unit vectors in R^3

x, traj = fm.sample(2000, seed=1, record=50)          # (2000, 3), (51, 2000, 3)
data = mdata.sample("vmf", 2000, np.random.default_rng(2))
print(f"largest | |x| - 1 | of the samples: {np.abs(np.linalg.norm(x, axis=1) - 1).max():.1e}")
print(f"geodesic W2 between samples and fresh data: {geodesic_w2(x, data, 'sphere'):.4f}")

os.makedirs(OUT, exist_ok=True)
print(mplots.sphere_samples(os.path.join(OUT, "sphere.png"), x, data))
print(mplots.flow_gif(os.path.join(OUT, "sphere.gif"), "sphere", traj))
grid = fm.density_grid(n_grid=48, steps=40, dtype="float32")
print(f"the density integrates to {grid_mass(grid):.4f} over the sphere")
a, b, pts, _ = grid_points(SPHERE, 48)
exact = mdata.log_density("vmf", pts).reshape(len(b), len(a))
print(mplots.density_map(os.path.join(OUT, "sphere_density.png"), "sphere", grid, exact))
