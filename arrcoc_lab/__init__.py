"""ARR-COC Lab: query-aware adaptive visual-token compression for vision-language models.

    from arrcoc_lab import load_pipeline
    pipe = load_pipeline("lab")
    out = pipe(image, "What's the formula on the billboard?", budget=64, policy="arrcoc")
    out = pipe("example:scenebench-paris", "What does the billboard say?")  # a shipped image: list_examples()
"""
from .errors import CheckpointError, InputError, InterfaceError

__all__ = ["load_pipeline", "Pipeline", "PipelineOutput", "InputError", "CheckpointError", "InterfaceError",
           "POLICIES", "get_policy", "register_policy", "list_examples", "example_path", "ArrcocConfig", "ArrcocModel"]
__version__ = "0.1.0"


def __getattr__(name):  # heavy imports (torch, transformers) only when the pipeline is used
    if name in ("load_pipeline", "Pipeline", "PipelineOutput", "UntrainedWeightsWarning"):
        from . import pipeline
        return getattr(pipeline, name)
    if name in ("POLICIES", "get_policy", "register_policy"):  # the allocation registry
        from . import policies
        return getattr(policies, name)
    if name in ("list_examples", "example_path"):  # the shipped example images (assets/examples/)
        from . import examples
        return getattr(examples, name)
    if name in ("ArrcocConfig", "ArrcocModel"):  # transformers classes; importing arrcoc_lab.hf registers the Auto classes
        from . import hf
        return getattr(hf, name)
    raise AttributeError(f"module 'arrcoc_lab' has no attribute {name!r}")
