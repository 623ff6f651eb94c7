# Two commands do all set-up from nothing: `make demo` and `make test`.
# Each creates .venv and installs the project with every extra into it, through constraints.txt
# (the exact versions it was tested with), when missing or when pyproject.toml or constraints.txt changed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test clean train-lab figures

# The whole lab curriculum as papermill notebooks; reports land in reports/lab/<phase>/,
# checkpoints in runs/lab/<phase>/ (git-ignored); the result is exported as the shipped weights,
# evaluated, and benchmarked (with uniform's own fine-tuned downstream, runs/lab/uniform_ft/).
# Resumable: a phase is done when its runs/lab/<phase>/model.safetensors exists; an interrupted phase
# continues from its last checkpoint when `make train-lab` runs again (reports/lab/RUN.md).
# CPU cost per phase and in total: reports/lab/RUN.md. On a GPU: make train-lab LAB_DEVICE=cuda
LAB_DATA ?= scenebench:train@12000+docsynth:train@2000
# Each phase's step count is its own, in arrcoc_lab/training/phases.py (the notebooks default to it);
# LAB_STEPS_PHASE0 (0B ... 0I, 0L, 0M, 0N, 1A) overrides one, LAB_STEPS phases 1-3's: `make train-lab LAB_STEPS_PHASE0=5000`.
# what phase0c starts from: phase0b's weights; or, when runs/ is lost, earlier shipped weights
# (session 19 started it from session 18's, with 1,500 steps: reports/lab/RUN.md)
LAB_PHASE0C_INIT ?= runs/lab/phase0b/model.safetensors
# what phase0e starts from: phase0d's weights; when runs/ is lost, the shipped weights of session 20
# (their downstream is phase0d's; reports/lab/RUN.md says how)
LAB_PHASE0E_INIT ?= runs/lab/phase0d/model.safetensors
# what phase0f starts from: phase0e's weights; when runs/ is lost, the shipped weights of session 21
# (their downstream is phase0e's; reports/lab/RUN.md says how)
LAB_PHASE0F_INIT ?= runs/lab/phase0e/model.safetensors
# what phase0g starts from: phase0f's weights; when runs/ is lost, the shipped weights of session 22
# (their downstream is phase0f's; reports/lab/RUN.md says how)
LAB_PHASE0G_INIT ?= runs/lab/phase0f/model.safetensors
# what phase0h starts from: phase0g's weights; when runs/ is lost, the shipped weights of session 23
# (their downstream is phase0g's; reports/lab/RUN.md says how)
LAB_PHASE0H_INIT ?= runs/lab/phase0g/model.safetensors
# what phase0i starts from: phase0h's weights; when runs/ is lost, the shipped weights of session 25
# (their downstream is phase0h's; reports/lab/RUN.md says how)
LAB_PHASE0I_INIT ?= runs/lab/phase0h/model.safetensors
LAB_DEVICE ?= cpu
# phase 0's (and 0b's to 0i's) global batch (cut into token-sorted micro-batches on reading steps)
LAB_BATCH_PHASE0 ?= 64
LAB_RUN := $(PY) -m arrcoc_lab run-phase
LAB_COMMON = -p data "$(LAB_DATA)" -p device $(LAB_DEVICE)

train-lab: runs/lab/benchmark.done

# A finished phase that make reruns (an earlier phase changed) starts afresh: its old run folder,
# whose checkpoints another init made, moves to runs/lab/<phase>.prev. An unfinished one (no
# model.safetensors yet) stays, and the phase resumes from its last checkpoint.
fresh = @if [ -f runs/lab/$(1)/model.safetensors ]; then rm -rf runs/lab/$(1).prev && mv runs/lab/$(1) runs/lab/$(1).prev; fi
# `-p steps N` when a step count was set, else nothing (the phase's own)
steps = $(if $(strip $(1)),-p steps $(strip $(1)))
# a phase that starts from its prerequisite's weights: $(1) the phase, $(2) its other -p options
define phase_from
$(call fresh,$(1))
$(LAB_RUN) $(1) $(LAB_COMMON) $(2) -p init_from $<
endef
# a phase-0 continuation (phase0b to phase0p): $(1) the phase, $(2) its step count, at phase 0's batch; $(3) more options
phase0_from = $(call phase_from,$(1),$(call steps,$(2)) -p batch_size $(LAB_BATCH_PHASE0) $(3))

runs/lab/phase0/model.safetensors: | $(STAMP)
	$(LAB_RUN) phase0 $(LAB_COMMON) $(call steps,$(LAB_STEPS_PHASE0)) -p batch_size $(LAB_BATCH_PHASE0)
runs/lab/phase0b/model.safetensors: runs/lab/phase0/model.safetensors
	$(call phase0_from,phase0b,$(LAB_STEPS_PHASE0B))
runs/lab/phase0c/model.safetensors: $(LAB_PHASE0C_INIT)
	$(call phase0_from,phase0c,$(LAB_STEPS_PHASE0C))
runs/lab/phase0d/model.safetensors: runs/lab/phase0c/model.safetensors
	$(call phase0_from,phase0d,$(LAB_STEPS_PHASE0D))
runs/lab/phase0e/model.safetensors: $(LAB_PHASE0E_INIT)
	$(call phase0_from,phase0e,$(LAB_STEPS_PHASE0E))
runs/lab/phase0f/model.safetensors: $(LAB_PHASE0F_INIT)
	$(call phase0_from,phase0f,$(LAB_STEPS_PHASE0F))
runs/lab/phase0g/model.safetensors: $(LAB_PHASE0G_INIT)
	$(call phase0_from,phase0g,$(LAB_STEPS_PHASE0G))
runs/lab/phase0h/model.safetensors: $(LAB_PHASE0H_INIT)
	$(call phase0_from,phase0h,$(LAB_STEPS_PHASE0H))
runs/lab/phase0i/model.safetensors: $(LAB_PHASE0I_INIT)
	$(call phase0_from,phase0i,$(LAB_STEPS_PHASE0I))
# the phase-0 continuation that phase 1a starts from: phase0h's (the shipped downstream then trains on
# in phases 0l to 0p, below); `make train-lab LAB_DOWNSTREAM=phase0i` starts it from phase0i's instead
LAB_DOWNSTREAM ?= phase0h
runs/lab/phase1a/model.safetensors: runs/lab/$(LAB_DOWNSTREAM)/model.safetensors
	$(call phase_from,phase1a,$(call steps,$(LAB_STEPS_PHASE1A)))
# phase 0j's batches from phase 1a's weights (session 30; shipped in session 31, then phase0m from it): it trains the
# downstream only, so phase 1a's analyzer and allocator are kept
runs/lab/phase0l/model.safetensors: runs/lab/phase1a/model.safetensors
	$(call phase0_from,phase0l,$(LAB_STEPS_PHASE0L))
# phase 0l's batches from its weights, 40 % of reading steps at the top level (shipped in session 31)
runs/lab/phase0m/model.safetensors: runs/lab/phase0l/model.safetensors
	$(call phase0_from,phase0m,$(LAB_STEPS_PHASE0M))
# phase 0m's batches from its weights, twice the detail full views (shipped in session 32)
runs/lab/phase0n/model.safetensors: runs/lab/phase0m/model.safetensors
	$(call phase0_from,phase0n,$(LAB_STEPS_PHASE0N))
# phase 0n's batches from its weights, code and number first (shipped in session 33)
runs/lab/phase0o/model.safetensors: runs/lab/phase0n/model.safetensors
	$(call phase0_from,phase0o,$(LAB_STEPS_PHASE0O))
# phase 0o's draw from its weights with new samples: seed 1, as phases 0j to 0o all drew seed 0's (shipped in session 34)
runs/lab/phase0p/model.safetensors: runs/lab/phase0o/model.safetensors
	$(call phase0_from,phase0p,$(LAB_STEPS_PHASE0P),-p seed 1)
runs/lab/phase1/model.safetensors: runs/lab/phase1a/model.safetensors
	$(call phase_from,phase1,$(call steps,$(LAB_STEPS)))
runs/lab/phase2/model.safetensors: runs/lab/phase1/model.safetensors
	$(call phase_from,phase2,$(call steps,$(LAB_STEPS)))
runs/lab/phase3/model.safetensors: runs/lab/phase2/model.safetensors
	$(call phase_from,phase3,$(call steps,$(LAB_STEPS)))
# The phase whose weights are shipped: phase 0p since session 34 (phase 1a's analyzer and allocator,
# the downstream trained on by phases 0l to 0p); phase 1a alone from session 19, as phases 1-3 (Gumbel allocator,
# CLIP, end to end) lowered val fine detail from 15 % to 6 % and the downstream's reading of signs
# (reports/lab/RUN.md, "Session 19"); `make train-lab LAB_LAST=phase3` runs and ships them.
LAB_LAST ?= phase0p
# export writes the shipped folder (weights, config.json, model card); once evaluated, the card gets its table
runs/lab/export.done: runs/lab/$(LAB_LAST)/model.safetensors
	$(PY) -m arrcoc_lab export $<
	$(LAB_RUN) evaluation
	$(PY) -m arrcoc_lab export $< --evaluation reports/lab/evaluation/metrics.json
	touch $@
runs/lab/uniform_ft/model.safetensors: runs/lab/export.done
	$(call fresh,uniform_ft)
	$(PY) -m arrcoc_lab train --phase uniform_ft --init-from arrcoc_lab/weights/lab/model.safetensors \
		--out runs/lab/uniform_ft --steps 200 --data "$(LAB_DATA)"
runs/lab/benchmark.done: runs/lab/uniform_ft/model.safetensors
	$(LAB_RUN) benchmark -p output_dir reports/bench/lab -p n_scenes 50
	touch $@

# Every extra (demo, lab, eval, test), at the exact versions of constraints.txt (docs/INSTALL.md).
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[all]"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m arrcoc_lab demo

test: $(STAMP)
	$(PY) -m pytest

# The README's pictures from the shipped weights: the two-question figure and data previews, then the
# demo and inspector screenshots from the browser tests (they refresh docs/figures/ when asked).
figures: $(STAMP)
	$(PY) -m arrcoc_lab.apps.figures --out docs/figures
	ARRCOC_UPDATE_FIGURES=1 $(PY) -m pytest -q tests/test_demo.py::test_page_shows_examples_results_and_errors \
		tests/test_browser_jupyter.py::test_inspector_renders_in_jupyterlab

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
