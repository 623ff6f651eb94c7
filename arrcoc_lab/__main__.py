"""`python -m arrcoc_lab …` is the `arrcoc-lab` command."""
import sys

from .apps.cli import main

if __name__ == "__main__":
    sys.exit(main())  # the command's exit status (2: refused input, 1: a failed notebook)
