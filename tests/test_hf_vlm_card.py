"""The model card of a saved hf-vlm pipeline names the VLM it wraps (family, folder, width) in place
of SAM / CLIP / Qwen3, and says that the VLM's weights are not in the folder; the other presets'
cards are unchanged."""
from __future__ import annotations

import pytest

from arrcoc_lab import load_pipeline, modelcard
from arrcoc_lab.checkpoint import CARD_FILE
from tests.vlm_fixtures import HIDDEN, write_llava


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    folder = write_llava(tmp_path_factory.mktemp("vlm") / "llava")
    return folder, load_pipeline("hf-vlm", vlm_path=str(folder), max_new_tokens=2)


def _facts(pipe, tmp_path):
    from arrcoc_lab.checkpoint import save_weights

    save_weights(pipe.model, tmp_path / "model.safetensors")
    return pipe._card_facts(None, tmp_path / "model.safetensors")


def test_card_names_the_vlm_and_not_sam_clip_qwen(llava, tmp_path):
    folder, pipe = llava
    facts = _facts(pipe, tmp_path)
    facts["vlm"] = modelcard.vlm_facts(pipe.config)  # what Pipeline._card_facts hands in (see pipeline.py)
    assert facts["vlm"] == {"family": "llava", "path": str(folder.resolve()), "hidden_size": HIDDEN,
                            "dtype": pipe.config.vlm.dtype}
    card = modelcard.render(facts, {"source": "random initialisation (seed 0)"}, None)
    assert "LLaVA (`LlavaForConditionalGeneration`)" in card and f"{HIDDEN} wide" in card
    assert modelcard.show_path(folder.resolve()) in card
    assert "Its weights are not in this folder" in card and "is not in this folder" in card
    for other in ("SAM encoder", "CLIP on tokens", "Qwen3", "frozen SAM encoder"):
        assert other not in card, other
    assert "| query encoder |" in card and "| LLM | the VLM's own language model" in card


def test_other_presets_have_no_vlm_facts(tiny_pipe, tmp_path):
    assert modelcard.vlm_facts(tiny_pipe.config) is None
    facts = _facts(tiny_pipe, tmp_path)
    card = modelcard.render(facts, {"source": "x"}, None)
    assert modelcard.render({**facts, "vlm": None}, {"source": "x"}, None) == card
    assert "SAM encoder" in card and "VLM" not in card


def test_save_pretrained_card_names_the_vlm(llava, tmp_path):
    folder, pipe = llava
    card = (pipe.save_pretrained(tmp_path / "saved") / CARD_FILE).read_text()
    assert "LLaVA (`LlavaForConditionalGeneration`)" in card and "Its weights are not in this folder" in card
    assert "SAM encoder" not in card
