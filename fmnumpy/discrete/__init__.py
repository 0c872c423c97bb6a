"""Discrete flow matching on tokens: the mixture path, the network and its loss, the
jump sampler and the ELBO, token data (docs/discrete.md)."""
