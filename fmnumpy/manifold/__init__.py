"""Flow matching on the sphere and the torus: the manifold contract and its entries,
the Riemannian step, sampler and likelihood, datasets (docs/manifolds.md)."""
