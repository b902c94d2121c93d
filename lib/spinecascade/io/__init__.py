"""Reading and writing images and landmark labels."""
