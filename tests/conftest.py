import os
import warnings

import numpy as np
import pytest

os.environ.setdefault("ARRCOC_PROBES", "1")  # interface checks on at every stage boundary in tests
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may download
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_pipe():
    from arrcoc_lab import load_pipeline

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_pipeline("tiny")


@pytest.fixture(scope="session")
def lab_pipe():
    from arrcoc_lab import load_pipeline

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_pipeline("lab")


@pytest.fixture
def rgb():
    rng = np.random.default_rng(0)
    return (rng.random((96, 120, 3)) * 255).astype(np.uint8)
