"""The network's pieces, shared by every family: activations, the MLP and its features,
forward-mode tangents, the loss (docs/gradients.md)."""
