"""The model and its use: the two-step cascade (centres, then corners) with its parts (film start, the paper's
PCA-constrained stages, level finder, corner heatmaps), the model file, prediction and evaluation. Which parts a
model has is its recipe's choice (spinecascade.training.recipes); the shipped model runs no PCA stage."""
