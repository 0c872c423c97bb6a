"""Minibatch couplings, shared by every family: the Jonker-Volgenant assignment, exact
OT, Sinkhorn and their registry (docs/couplings.md)."""
