"""`python -m arrcoc_lab …` is the `arrcoc-lab` command."""
from .apps.cli import main

if __name__ == "__main__":
    main()
