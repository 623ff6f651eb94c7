"""What people use: the CLI, the Gradio demo and the shared rendering (overlays, colour maps,
budget parsing) that the demo and the widgets draw with."""
