"""Validate a submission zip on Kaggle exactly as the scorer will read it. Needs no torch.

    python validate_submission.py [ZIP] [--data ROOT] [--json] [--strict]

ZIP defaults to /kaggle/working/submission.zip.

The competition root is discovered under /kaggle/input when --data is not given. vesukit is
imported from a src/ folder beside this file, else from the environment, else from a src/
folder or a vesukit wheel under /kaggle/input (a pure-Python wheel is importable straight
from sys.path). Exit 0 valid, 1 invalid, 2 usage.
"""

import glob
import os
import sys

DEFAULT_ZIP = "/kaggle/working/submission.zip"


def _find_vesukit() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    local = [os.path.join(here, "..", "src"), os.path.join(here, "src")]
    for path in local:  # a checkout beside this file wins over anything installed
        if os.path.isfile(os.path.join(path, "vesukit", "__init__.py")):
            sys.path.insert(0, os.path.abspath(path))
            return
    try:
        import vesukit  # noqa: F401
        return
    except ImportError:
        pass
    base = os.environ.get("VESUKIT_INPUT_BASE", "/kaggle/input")
    for depth in ("*", "*/*", "*/*/*", "*/*/*/*"):
        for path in glob.glob(os.path.join(base, depth, "src")) + sorted(
                glob.glob(os.path.join(base, depth, "vesukit-*.whl")), reverse=True):
            if path.endswith(".whl") or os.path.isfile(os.path.join(path, "vesukit",
                                                                    "__init__.py")):
                sys.path.insert(0, os.path.abspath(path))
                return
    sys.exit("validate_submission: vesukit not found; attach the vesukit dataset (its src/ "
             "folder or wheel) to the notebook, or pip install it.")


if __name__ == "__main__":
    _find_vesukit()
    from vesukit.cli import main

    argv = sys.argv[1:]
    if not argv or argv[0].startswith("-"):
        argv = [DEFAULT_ZIP, *argv]
    sys.exit(main(["validate", *argv]))
