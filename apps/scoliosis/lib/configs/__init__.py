"""App configuration."""
