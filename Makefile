# Two commands do all set-up from nothing: `make demo` and `make test`.
# Each creates .venv and installs the pinned project into it when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test clean train-lab

# The whole lab curriculum as papermill notebooks; reports land in reports/lab/<phase>/,
# checkpoints in runs/lab/<phase>/ (git-ignored); the result is exported as the shipped weights,
# evaluated, and benchmarked (with uniform's own fine-tuned downstream, runs/lab/uniform_ft/).
# Step counts fit a 2-core CPU in about 90 minutes. The shipped weights were trained on one H100
# (about 10 minutes of training): make train-lab LAB_DEVICE=cuda LAB_STEPS_PHASE0=5000 LAB_STEPS=300
LAB_STEPS_PHASE0 ?= 1600
LAB_STEPS_PHASE1A ?= 600
LAB_STEPS ?= 100
LAB_DEVICE ?= cpu
# SceneBench train scenes for every phase (6 questions each; SAM features are cached once per scene)
LAB_N_SCENES ?= 3000
# phase 0's global batch (half of it fine-detail questions, the signs its region reader learns from)
LAB_BATCH_PHASE0 ?= 32
train-lab: $(STAMP)
	$(PY) -m arrcoc_lab.apps.cli run-phase phase0 -p n_scenes $(LAB_N_SCENES) -p steps $(LAB_STEPS_PHASE0) -p device $(LAB_DEVICE) -p batch_size $(LAB_BATCH_PHASE0)
	$(PY) -m arrcoc_lab.apps.cli run-phase phase1a -p n_scenes $(LAB_N_SCENES) -p steps $(LAB_STEPS_PHASE1A) -p device $(LAB_DEVICE) -p init_from runs/lab/phase0/model.safetensors
	$(PY) -m arrcoc_lab.apps.cli run-phase phase1 -p n_scenes $(LAB_N_SCENES) -p steps $(LAB_STEPS) -p device $(LAB_DEVICE) -p init_from runs/lab/phase1a/model.safetensors
	$(PY) -m arrcoc_lab.apps.cli run-phase phase2 -p n_scenes $(LAB_N_SCENES) -p steps $(LAB_STEPS) -p device $(LAB_DEVICE) -p init_from runs/lab/phase1/model.safetensors
	$(PY) -m arrcoc_lab.apps.cli run-phase phase3 -p n_scenes $(LAB_N_SCENES) -p steps $(LAB_STEPS) -p device $(LAB_DEVICE) -p init_from runs/lab/phase2/model.safetensors
	$(PY) -m arrcoc_lab.apps.cli export runs/lab/phase3/model.safetensors
	$(PY) -m arrcoc_lab.apps.cli run-phase evaluation
	$(PY) -m arrcoc_lab.apps.cli train --phase uniform_ft --init-from arrcoc_lab/weights/lab/model.safetensors \
		--out runs/lab/uniform_ft --steps 200 --n-scenes $(LAB_N_SCENES)
	$(PY) -m arrcoc_lab.apps.cli run-phase benchmark -p output_dir reports/bench/lab

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m arrcoc_lab.apps.cli demo

test: $(STAMP)
	$(PY) -m pytest

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
