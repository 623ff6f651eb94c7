from pathlib import Path

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
    written = np.asarray(Image.open(tmp_path / "o.png"))  # the overlay, a heading above and a colour bar below
    assert written.shape[1] >= rgb.shape[1] and written.shape[0] > rgb.shape[0]  # narrow images: centred on white
    assert main(["inspect", str(p), "What city is this?", "--budget", "5"]) == 2
    assert "[16, 1024]" in capsys.readouterr().err
    assert main(["inspect", str(tmp_path / "missing.png"), "q"]) == 2


# ------------------------------------------------------------------------------ issue 17: careless input
import pytest  # noqa: E402


@pytest.fixture
def no_model(monkeypatch):
    """Loading a pipeline or training data fails the test: refusals must come before either."""
    import arrcoc_lab.pipeline
    import arrcoc_lab.training.sampling

    def forbidden(*a, **k):
        raise AssertionError("expensive work started before the input was checked")

    monkeypatch.setattr(arrcoc_lab.pipeline, "load_pipeline", forbidden)
    monkeypatch.setattr(arrcoc_lab.training.sampling, "load_train_data", forbidden)


def _refused(capsys, argv, *fragments):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err  # one line
    for f in fragments:
        assert f in err, err
    return err


@pytest.mark.parametrize("argv, fragments", [
    (["eval", "--data", "nope:test"], ["unknown dataset 'nope'", "scenebench", "docvqa"]),
    (["eval", "--data", "scenebench:tset"], ["unknown split 'tset'", "test"]),
    (["eval", "--data", "docvqa:/x.json"], ["docvqa:/x.json"]),
    (["eval", "--n-scenes", "0"], ["--n-scenes", "≥ 1"]),
    (["eval", "--policy", "arrcoc,nope"], ["unknown policy 'nope'"]),
    (["example", "--index", "-1"], ["--index", "≥ 0"]),
    (["example", "--preset", "lab", "--sam-checkpoint", "sam.pth"], ["apply to the paper preset", "--preset paper"]),
    (["example", "--device", "bogus"], ["unknown device 'bogus'"]),
    (["example", "--weights", "missing.safetensors"], ["not found"]),
    (["train", "--preset", "tiny", "--phase", "phase0", "--out", "{tmp}/run", "--data", "scenebench:tset"],
     ["unknown split 'tset'", "train"]),
    (["train", "--phase", "phase9", "--out", "{tmp}/run"], ["unknown phase 'phase9'"]),
    (["train", "--phase", "phase0", "--out", "{tmp}/run", "--lr", "-1"], ["--lr", "positive"]),
    (["train", "--phase", "phase0", "--out", "{tmp}/run", "--data", "scenebench:train@x"], ["count after @"]),
    (["train", "--phase", "phase0", "--out", "{tmp}/run", "--log-with", "nope"], ["unknown tracker", "tensorboard"]),
    (["bench", "--budgets", "64,abc"], ["--budgets"]),
    (["read-signs", "--levels", "3,9"], ["levels [3, 9]", "0..3"]),
    (["read-signs", "--levels", "top"], ["--levels", "comma-separated level numbers"]),
    (["read-signs", "--data", "scenebench:tset"], ["unknown split 'tset'"]),
    (["bench", "--max-new-tokens", "0"], ["max_new_tokens must be a whole number in [1, 256]"]),
    (["bench", "--own", "uniform=missing.safetensors"], ["not found"]),
    (["latency", "--preset", "tiny", "--device", "cuda:9"], ["not available"]),
    (["inspect", "{png}", "What?", "--out", "{tmp}/o.unknownext"], ["cannot write .unknownext", ".png"]),
    (["inspect", "{png}", "What?", "--out", "{png}/o.png"], ["is a file, not a folder"]),
    (["inspect", "{png}", "\udcff\udcfe"], ["lone surrogate"]),  # a non-UTF-8 argv, as Python decodes it
    (["inspect", "{png}", "\u200b"], ["query is empty"]),
    (["inspect", "{tmp}/none.png", "What?"], ["image file not found"]),
    (["inspect", "{bomb}", "What?"], ["decompression bomb"]),  # PIL's DecompressionBombError was a traceback
    (["inspect", "{png}", "What?", "--budget", "FASTER"], ["budget must be a whole number of tokens"]),
])
def test_bad_arguments_are_one_line_and_exit_2_before_any_work(capsys, no_model, tmp_path, rgb, argv, fragments):
    from tests.test_inputs import png_bytes

    png = tmp_path / "x.png"
    Image.fromarray(rgb).save(png)
    (tmp_path / "bomb.png").write_bytes(png_bytes(size=(200_000, 200_000)))
    _refused(capsys, [a.format(tmp=tmp_path, png=png, bomb=tmp_path / "bomb.png") for a in argv], *fragments)


def test_out_into_a_new_folder_is_created(capsys, tmp_path, rgb):
    """--out into a missing folder used to fail with a traceback after the computation."""
    png = tmp_path / "x.png"
    Image.fromarray(rgb).save(png)
    out = tmp_path / "new" / "deeper" / "o.png"
    assert main(["inspect", str(png), "What city is this?", "--preset", "tiny", "--weights", "random",
                 "--budget", "FAST", "--out", str(out)]) == 0
    assert "budget 4" in capsys.readouterr().out and np.asarray(Image.open(out)).shape[1] >= rgb.shape[1]


def test_train_data_of_a_small_geometry_is_accepted():
    """Fewer than 32 patches a side (tiny: 16; hf-vlm's LLaVA-1.5: 24 tokens) no longer refuses the
    synthetic training sets: they render at 32 patches and are resized to the model's input, as in
    evaluation. The lab preset's 32 patches render at its own size, as before."""
    from arrcoc_lab.apps.checks import check_train_data
    from arrcoc_lab.modeling.presets import get_preset
    from arrcoc_lab.modeling.vlm import vlm_geometry
    from arrcoc_lab.training.sampling import render_size

    tiny, llava, lab = get_preset("tiny").geometry, vlm_geometry(336, 14), get_preset("lab").geometry
    for g in (tiny, llava, lab):
        check_train_data("scenebench:train@4+docsynth:train@2", 4, g, "x")
    assert (render_size(tiny, "scenebench"), render_size(llava, "scenebench")) == (256, 448)
    assert render_size(lab, "scenebench") == render_size(lab, "docsynth") == lab.image_size == 256
    assert render_size(tiny, "docvqa") == tiny.image_size  # real files: the model's size, as before


def test_example_runs_on_the_tiny_preset(capsys, tmp_path):
    """The bundled scene renders at its own size when the preset's input is too small for it."""
    assert main(["example", "--preset", "tiny", "--weights", "random", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.count("Q: ") == 2 and (tmp_path / "example_allocation.png").is_file()


def test_train_resume_with_a_new_lr_is_refused_before_the_data(capsys, tmp_path, monkeypatch, lab_pipe):
    """The checkpoint was written at the phase's own lr; resuming with --lr would keep the old
    schedule while train_config.json recorded the new one: refused, listing the key."""
    import json

    import arrcoc_lab.pipeline
    import arrcoc_lab.training.sampling
    from arrcoc_lab.training.config import TrainConfig
    from arrcoc_lab.training.loop import run_config
    from arrcoc_lab.training.phases import get_phase

    monkeypatch.setattr(arrcoc_lab.pipeline, "load_pipeline", lambda *a, **k: lab_pipe)
    monkeypatch.setattr(arrcoc_lab.training.sampling, "load_train_data",
                        lambda *a, **k: pytest.fail("training data loaded before the resume check"))
    ck = tmp_path / "run" / "checkpoints" / "step_000002"
    ck.mkdir(parents=True)
    config = run_config(get_phase("phase0", steps=4), TrainConfig(n_scenes=6, batch_size=4, sample_log_every=25),
                        lab_pipe.config.to_dict())
    (ck / "state.json").write_text(json.dumps({"step": 2, "history": [], "config": config}))
    _refused(capsys, ["train", "--phase", "phase0", "--steps", "4", "--n-scenes", "6", "--batch-size", "4",
                      "--out", str(tmp_path / "run"), "--lr", "0.5"], "cannot resume", "(phase.lr)", "--no-resume")


def test_encoder_resume_with_other_settings_is_refused_before_rendering(capsys, tmp_path, monkeypatch):
    import json
    from dataclasses import asdict

    import arrcoc_lab.training.encoder_pretrain as ep

    monkeypatch.setattr(ep, "scene_pixels", lambda *a, **k: pytest.fail("scenes rendered before the resume check"))
    ck = tmp_path / "run" / "checkpoints" / "step_000002"
    ck.mkdir(parents=True)
    old = {"encoder_pretrain": asdict(ep.EncoderPretrainConfig(n_scenes=4, steps=4, batch_size=4)), "pipeline": None}
    (ck / "state.json").write_text(json.dumps({"step": 2, "history": [], "config": old}))
    _refused(capsys, ["train", "--phase", "encoder", "--preset", "tiny", "--n-scenes", "4", "--steps", "4",
                      "--batch-size", "8", "--out", str(tmp_path / "run")],
             "(encoder_pretrain.batch_size, pipeline)")  # None vs the tiny config: the whole key


def test_eval_with_held_out_phrasings(capsys, tmp_path):
    """`arrcoc-lab eval --phrasing heldout`: the same questions in wordings training never used."""
    import json

    out = tmp_path / "heldout"
    assert main(["eval", "--preset", "tiny", "--data", "scenebench:test", "--n-scenes", "1", "--policy", "uniform",
                 "--phrasing", "heldout", "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["phrasing"] == "heldout" and "uniform" in metrics["policies"]
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    from arrcoc_lab.data.phrasing import parse
    assert rows and all(parse(r["question"]).source == "heldout" for r in rows)


# ------------------------------------------------------------------------------ a newcomer's first hour
def test_examples_lists_the_shipped_images(capsys):
    import json

    from arrcoc_lab.examples import list_examples

    exs = list_examples()
    assert main(["examples"]) == 0
    text = capsys.readouterr().out
    for e in exs:
        w, h = e.size
        assert f"\n{e.name}   {w}x{h} px" in text and e.description in text
        assert all(q.question in text for q in e.questions)
    assert "-> a+m=9" in text and "arrcoc-lab inspect example:scenebench-paris" in text
    assert main(["examples", "astronaut", "--json"]) == 0
    [item] = json.loads(capsys.readouterr().out)
    assert item["image"] == "example:astronaut" and (item["width"], item["height"]) == (512, 512)
    assert item["questions"][2] == {"question": "What colour is her suit?", "answer": "orange", "kind": "gist"}
    err = _refused(capsys, ["examples", "nope"], "unknown example 'nope'", "scenebench-paris", "scanned-page")
    assert "Traceback" not in err


def test_inspect_a_shipped_example_asks_its_own_question(capsys):
    assert main(["inspect", "example:scenebench-paris", "--preset", "tiny", "--weights", "random", "--budget", "12"]) == 0
    text = capsys.readouterr().out
    assert "Q: What does the billboard say?" in text and "(reference: 'a+m=9')" in text
    assert main(["inspect", "example:astronaut", "What colour is her suit?", "--preset", "tiny", "--weights", "random"]) == 0
    assert "(reference: 'orange')" in capsys.readouterr().out
    assert main(["inspect", "example:astronaut", "Is it night?", "--preset", "tiny", "--weights", "random"]) == 0
    assert "reference" not in capsys.readouterr().out  # a question of one's own has no reference answer


@pytest.mark.parametrize("argv, fragments", [
    (["inspect", "example:nope", "What?"], ["unknown example 'example:nope'", "scenebench-paris", "astronaut"]),
    (["inspect", "example:nope"], ["unknown example 'example:nope'", "arrcoc-lab examples"]),
    (["inspect", "{png}"], ["inspect needs a QUESTION", "example:NAME"]),
    (["eval", "--out", "{tmp}/e", "--update-reports"], ["either --out or --update-reports"]),
    (["bench", "--out", "{tmp}/b", "--update-reports"], ["either --out or --update-reports"]),
    (["latency", "--preset", "tiny", "--device", "cpu", "--out", "{tmp}/l", "--update-reports"],
     ["either --out or --update-reports"]),
    (["run-phase", "quickstart", "--update-reports", "-p", "output_dir", "{tmp}/q"], ["either --update-reports or -p output_dir"]),
])
def test_first_hour_refusals_come_before_any_work(capsys, no_model, tmp_path, rgb, argv, fragments):
    png = tmp_path / "x.png"
    Image.fromarray(rgb).save(png)
    _refused(capsys, [a.format(tmp=tmp_path, png=png) for a in argv], *fragments)


def test_commands_write_run_folders_unless_asked_for_reports(capsys, tmp_path, monkeypatch):
    """Documented commands leave the tracked reports/ alone: by default they write under runs/ (and the
    feature cache), git-ignored; --update-reports writes reports/."""
    monkeypatch.chdir(tmp_path)
    tiny = ["--preset", "tiny", "--weights", "random"]
    assert main(["examples"]) == 0
    assert main(["inspect", "example:docsynth-chart", *tiny]) == 0
    assert main(["example", *tiny]) == 0
    assert main(["eval", *tiny, "--data", "scenebench:test", "--n-scenes", "1", "--policy", "uniform"]) == 0
    bench = ["bench", "--weights", "random", "--data", "scenebench:test", "--n-scenes", "1", "--budgets", "64", "--policies", "uniform",
             "--no-paper-flops", "--max-new-tokens", "1", "--flop-samples", "1"]
    assert main(bench) == 0
    latency = ["latency", "--preset", "tiny", "--device", "cpu", "--dtype", "fp32", "--policies", "uniform", "--budgets",
               "64", "--runs", "1", "--warmup", "0", "--quiet"]
    assert main(latency) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "runs"]
    assert (tmp_path / "runs" / "example" / "example_allocation.png").is_file()
    assert (tmp_path / "runs" / "eval" / "scenebench-test-uniform-default" / "metrics.json").is_file()
    assert (tmp_path / "runs" / "bench" / "lab" / "report.md").is_file()
    assert (tmp_path / "runs" / "bench" / "tiny_latency_cpu" / "latency.json").is_file()
    assert main(latency + ["--update-reports"]) == 0
    assert (tmp_path / "reports" / "bench" / "tiny_latency_cpu" / "latency.json").is_file()
    capsys.readouterr()


def test_run_phase_values_reach_the_notebook_as_the_literals_typed():
    """papermill writes a tuple parameter into the notebook as its string; -p values hand it lists."""
    import ast

    from papermill.translators import PythonTranslator

    from arrcoc_lab.apps import runner

    typed = "{'trainable': ('clip', 'llm'), 'lr_scale': {'clip': 0.25}, 'segments': ((10, {'rephrase': 0.5}),)}"
    value = runner.parse_value(typed)
    assert ast.literal_eval(PythonTranslator.translate(value)) == {
        "trainable": ["clip", "llm"], "lr_scale": {"clip": 0.25}, "segments": [[10, {"rephrase": 0.5}]]}
    assert runner.parse_value("3") == 3 and runner.parse_value("runs/lab/x") == "runs/lab/x"


def test_run_phase_quickstart_writes_a_run_folder_and_report_runs_keep_reports(tmp_path, monkeypatch):
    """The quickstart is a tour (runs/quickstart/, reports/quickstart/ with --update-reports); the
    curriculum notebooks are report runs, as `make train-lab` expects (reports/lab/<phase>/)."""
    import papermill

    from arrcoc_lab.apps import runner

    ran = []
    monkeypatch.setattr(papermill, "execute_notebook", lambda nb, out, parameters, **k: ran.append((out, parameters)))
    monkeypatch.chdir(tmp_path)
    assert main(["run-phase", "quickstart", "-p", "preset", "tiny"]) == 0
    assert main(["run-phase", "quickstart", "--update-reports"]) == 0
    assert main(["run-phase", "quickstart", "-p", "output_dir", "mine"]) == 0
    assert [Path(out).relative_to(tmp_path).as_posix() if Path(out).is_absolute() else out for out, _ in ran] == [
        "runs/quickstart/00_quickstart.ipynb", "reports/quickstart/00_quickstart.ipynb", "mine/00_quickstart.ipynb"]
    assert [p["output_dir"] for _, p in ran] == ["runs/quickstart", "reports/quickstart", "mine"]
    for phase in (name for name in runner.NOTEBOOK_FILES if name not in runner.TOURS):
        assert runner.default_output_dir(phase) == f"reports/lab/{phase}"
        assert runner.default_output_dir(phase, update_reports=True) == f"reports/lab/{phase}"


def test_help_is_grouped_and_every_command_and_option_says_what_it_does(capsys):
    import argparse

    from arrcoc_lab.apps.cli import COMMANDS, build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert [name for _, name, _, _ in COMMANDS] == list(subparsers.choices)
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: arrcoc-lab [-h] [-v] COMMAND ...")
    for heading in ("Try it:", "Evaluate:", "Train and ship:"):
        assert f"\n{heading}\n" in text
    for group, name, one_line, more in COMMANDS:
        assert f"  {name}" in text and one_line in text
        # the one-line help: lower case, a verb first, no full stop, one line; the description a sentence or more
        assert one_line[0].islower() and not one_line.endswith(".") and "\n" not in one_line and len(one_line) <= 90
        assert more[0].isupper() and more.endswith(".")
        sp = subparsers.choices[name]
        assert sp.prog == f"arrcoc-lab {name}" and sp.description.startswith(one_line[0].upper() + one_line[1:])
        missing = [a.dest for a in sp._actions if not a.help and a.dest != "help"]
        assert not missing, f"{name}: options without help: {missing}"
        assert main([name, "--help"]) == 0
        assert capsys.readouterr().out.startswith(f"usage: arrcoc-lab {name} ")


def test_python_dash_m_returns_the_command_status(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "arrcoc_lab", "examples", "nope"], capture_output=True, text=True,
                       timeout=120, cwd=tmp_path)
    assert r.returncode == 2 and "unknown example 'nope'" in r.stderr and not list(tmp_path.iterdir())
