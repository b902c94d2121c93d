"""Measurements on landmark arrays: Cobb angles, error metrics and label plausibility checks."""
