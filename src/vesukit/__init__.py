"""vesukit: from trained 3D-segmentation teachers to a Kaggle Vesuvius submission.

Importing the package is cheap and never imports torch: the validator and the volume I/O
must work on an image that holds only numpy, tifffile and Pillow.
"""

__version__ = "0.1.0"

from vesukit.errors import VesukitError  # noqa: E402  (re-exported for callers)

__all__ = ["VesukitError", "__version__"]
