"""The model (docs/ARCHITECTURE.md): the nine stages, the composed ARRCOC, geometry, the trace, the configs
and presets, and the pure builder. Nothing here imports another layer of the package."""
