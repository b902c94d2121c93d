"""Scoring methods."""
