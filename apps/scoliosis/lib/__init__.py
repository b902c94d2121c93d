"""The scoliosis MONAI Label app's tasks; the method itself is the spinecascade package."""
