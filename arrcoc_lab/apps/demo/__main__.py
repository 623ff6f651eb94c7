"""`python -m arrcoc_lab.apps.demo [--share] [--port N] …`: serve the Gradio demo."""
import sys

from .server import main

sys.exit(main())
