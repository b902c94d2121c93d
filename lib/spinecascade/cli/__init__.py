"""The `spinecascade` command line."""
