"""Defaults the command line and the engine share; importable without torch (the CLI parser
reads them before anything heavy is loaded)."""

# Fraction of a window shared with its neighbour along each axis: nnU-Net's tile step 0.5 and
# MONAI's usual overlap; every sliding window, calibration pass and `segment` run starts here.
DEFAULT_OVERLAP = 0.5
