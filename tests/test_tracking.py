"""Training logs through Accelerate's trackers: TensorBoard event files under <out>/tensorboard/<phase>/
hold every history row at its step, equal to history.json (also after a resume), tracking changes no
number the run computes, and log_with is checked and resumable."""
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from arrcoc_lab.errors import InputError
from arrcoc_lab.training.checkpoints import config_differences
from arrcoc_lab.training.config import TrainConfig
from arrcoc_lab.training.loop import run_config, run_phase
from arrcoc_lab.training.phases import get_phase
from arrcoc_lab.training.tracking import TRACKER_DIR, flat_config, tag, trackers

pytest.importorskip("tensorboard")
STEPS = 4


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """The lab preset at its seeded init on 4 scenes; a phase-0 run of 4 steps, logged every step."""
    from arrcoc_lab.pipeline import load_pipeline
    from arrcoc_lab.training.sampling import load_train_data

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = load_pipeline("lab", weights="random")
    cfg = TrainConfig(n_scenes=4, batch_size=8, cache_dir=str(tmp_path_factory.mktemp("cache")), progress=False,
                      render_workers=0, log_every=1, ckpt_every=2, log_with="tensorboard")
    init = {k: v.clone() for k, v in pipe.model.state_dict().items()}
    return pipe, load_train_data(pipe.model, cfg), cfg, init


def _train(lab, out: Path, resume: bool = False, **changes):
    pipe, data, cfg, init = lab
    if not resume:
        pipe.model.load_state_dict(init)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_phase(pipe.model, data, get_phase("phase0", steps=STEPS), TrainConfig(**{**cfg.__dict__, **changes}), out,
                  resume=resume)
    return json.loads((out / "history.json").read_text())


def _scalars(out: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / TRACKER_DIR / "phase0"), size_guidance={"scalars": 0})
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def _assert_events_equal_history(out: Path, history: list[dict]) -> None:
    scalars = _scalars(out)
    keys = {k for row in history for k in row if k != "step"}
    assert set(scalars) == {tag(k) for k in keys}
    assert {"loss/answer", "answer/gist", "answer/detail", "allocation/avg_tokens", "allocation/level0_share",
            "train/lr"} <= set(scalars)
    assert any(t.startswith("answer/") and t not in ("answer/gist", "answer/detail") for t in scalars)  # families
    for k in keys:
        expected = [(row["step"], float(np.float32(row[k]))) for row in history if k in row]
        assert scalars[tag(k)] == expected, k  # event files store float32


def test_tensorboard_events_hold_the_history_and_change_no_number(lab, tmp_path):
    history = _train(lab, tmp_path / "run")
    assert [row["step"] for row in history] == list(range(1, STEPS + 1))
    assert len(_scalars(tmp_path / "run")["loss/answer"]) == STEPS
    _assert_events_equal_history(tmp_path / "run", history)
    untracked = _train(lab, tmp_path / "untracked", log_with="none")
    assert not (tmp_path / "untracked" / TRACKER_DIR).exists()
    strip = lambda h: [{k: v for k, v in row.items() if k != "wall_s"} for row in h]
    assert strip(history) == strip(untracked)  # the same losses, bit for bit


def test_a_resumed_run_s_events_equal_its_history(lab, tmp_path):
    """The run finishes, then resumes from its step-2 checkpoint (as after a kill past it): the
    second sitting's restart marker drops the first one's points; its replay and new rows remain."""
    out = tmp_path / "run"
    first = _train(lab, out)
    second = _train(lab, out, resume=True)
    assert [r["step"] for r in second] == [r["step"] for r in first]
    assert second[2]["wall_s"] != first[2]["wall_s"]  # steps 3-4 were logged twice, with other wall times
    assert len(list((out / TRACKER_DIR / "phase0").glob("events.out.tfevents.*"))) == 2
    _assert_events_equal_history(out, second)


def test_log_with_names_are_checked():
    assert trackers("none") == [] and trackers("") == []
    assert trackers("auto") == ["tensorboard"] == trackers(" TensorBoard ") == trackers("tensorboard,tensorboard")
    with pytest.raises(InputError, match="unknown tracker.*'tensorbored'.*accepted"):
        trackers("tensorbored")
    try:
        import wandb  # noqa: F401
    except ImportError:
        with pytest.raises(InputError, match="'wandb'.* not installed"):
            trackers("tensorboard,wandb")


def test_tags_group_the_history_keys():
    assert [tag(k) for k in ("answer", "relevance", "read", "answer_gist", "answer_formula", "avg_tokens",
                             "level2_share", "lr", "wall_s", "read_acc")] == [
        "loss/answer", "loss/relevance", "loss/read", "answer/gist", "answer/formula", "allocation/avg_tokens",
        "allocation/level2_share", "train/lr", "train/wall_s", "reader/read_acc"]
    flat = flat_config({"phase": {"lr": 0.1, "losses": {"answer": 1.0}, "modules": ["clip"]}, "pipeline": None})
    assert flat == {"phase.lr": 0.1, "phase.losses.answer": 1.0, "phase.modules": '["clip"]', "pipeline": "null"}


def test_log_with_is_resumable_and_absent_from_older_checkpoints():
    """A checkpoint written before log_with existed resumes under any log_with."""
    new = json.loads(json.dumps(run_config(get_phase("phase0"), TrainConfig(), {"preset": "lab"})))
    old = json.loads(json.dumps(new))
    del old["train"]["log_with"]
    assert config_differences(old, new) == []
    assert config_differences(new, {**new, "train": {**new["train"], "log_with": "none"}}) == []
