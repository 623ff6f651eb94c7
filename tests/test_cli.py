import numpy as np
from PIL import Image

from arrcoc_lab.apps.cli import main


def test_example_prints_two_questions_and_saves_map(tmp_path, capsys):
    assert main(["example", "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert text.count("Q: ") == 2 and "visual tokens" in text and "tokens per cell" in text
    img = Image.open(tmp_path / "example_allocation.png")
    assert img.width > img.height  # two maps side by side


def test_inspect_and_bad_input(tmp_path, capsys, rgb):
    p = tmp_path / "x.png"
    Image.fromarray(rgb).save(p)
    assert main(["inspect", str(p), "What city is this?", "--budget", "64", "--out", str(tmp_path / "o.png")]) == 0
    text = capsys.readouterr().out
    assert "budget 64" in text and "visual tokens" in text and "overlay saved" in text
    assert np.asarray(Image.open(tmp_path / "o.png")).shape == rgb.shape
    assert main(["inspect", str(p), "What city is this?", "--budget", "5"]) == 2
    assert "[16, 1024]" in capsys.readouterr().err
    assert main(["inspect", str(tmp_path / "missing.png"), "q"]) == 2
