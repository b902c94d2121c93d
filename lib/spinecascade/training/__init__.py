"""Training: named recipes, one settings block per trained part, the phases, the loop and the one entry point
(`train_model`) that the command line and the MONAI Label app both use."""
