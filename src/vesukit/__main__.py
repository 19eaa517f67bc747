"""`python -m vesukit ...` runs the command line."""

import sys

from vesukit.cli import main

if __name__ == "__main__":
    sys.exit(main())
