"""The method: the shape-constrained two-step cascade (model, training, prediction)."""
