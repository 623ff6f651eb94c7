"""The pipeline as an lmms-eval model (docs/LMMS_EVAL.md): `lmms-eval --model arrcoc`.

    pip install -c constraints.txt -e ".[eval]"
    lmms-eval --model arrcoc --model_args pretrained=DIR,policy=arrcoc,budget=256 --tasks docvqa_val \\
        --output_path runs/lmms_eval --log_samples

lmms-eval (0.7.x) finds models through its `lmms_eval.models` entry-point group; pyproject.toml
declares ours there (`arrcoc = arrcoc_lab.evaluation.lmms_eval_model:manifest`), so installing the
package is all the registration there is. `python -m arrcoc_lab.evaluation.lmms_eval_model ARGS`
is the same command line for an environment where the package's metadata is not installed
(a bare checkout on PYTHONPATH): it registers the model, then runs lmms-eval's own CLI.

model_args (lmms-eval's `key=value,key=value`):
  pretrained       a preset name (lab, tiny, paper, hf-vlm) or a folder written by
                   `Pipeline.save_pretrained` (default: lab, the shipped weights)
  policy           a registered policy (default: arrcoc)
  budget           visual tokens, a quality mode (fast, balanced, accurate) or default
                   (the policy's own); checked against the preset when the model loads
  device           cpu, cuda, cuda:N, mps (default: lmms-eval's --device, else the pipeline's)
  max_new_tokens   the answer-length cap, 1..256; without it the task's generation_kwargs
                   max_new_tokens (capped at 256), else the preset's default

Each generate_until request is one `pipe(image, context, budget=…, policy=…)`. The image is the
first one the task's `doc_to_visual` gives (further ones are ignored; the log says so once per
task); the question is the task's prompt text as lmms-eval formats it; the answer is greedy
(temperature and sampling options are ignored) and is cut at the first of the task's `until`
strings. The visual tokens each answer used come back in the sample's `token_counts` as
`input_tokens` (visual tokens only: the question's text tokens are not counted). loglikelihood
(multiple-choice scoring) and multi-round generation raise NotImplementedError: the pipeline's
contract gives greedy answers.
"""
from __future__ import annotations

import os
import sys
from typing import Any

from lmms_eval.api.instance import GenerationResult, Instance, TokenCounts
from lmms_eval.api.model import lmms
from loguru import logger as log  # lmms-eval logs through loguru (and lmms_eval.utils mutes the warnings module)

from ..errors import InputError
from ..inputs import MAX_NEW_TOKENS, check_max_new_tokens

MODEL_NAME = "arrcoc"  # lmms-eval --model arrcoc
MODULE = "arrcoc_lab.evaluation.lmms_eval_model"  # (not __name__, which is __main__ under python -m)
ENTRY_POINT_GROUP = "lmms_eval.models"
MODEL_ARGS = ("pretrained", "policy", "budget", "device", "max_new_tokens", "vlm_path")
_RUNNER_ARGS = ("batch_size", "max_batch_size")  # what lmms-eval's evaluator passes to every model


def manifest():
    """The entry point lmms-eval loads (group `lmms_eval.models`): our model's manifest."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_NAME, simple_class_path=f"{MODULE}.ArrcocLMMS")


def register() -> None:
    """Register `arrcoc` with lmms-eval's model registry in this process (what the entry point
    does at install time); idempotent."""
    from lmms_eval import models

    models.MODEL_REGISTRY_V2.register_manifest(manifest(), overwrite=True)
    models.AVAILABLE_MODELS[MODEL_NAME] = ArrcocLMMS.__name__
    models.AVAILABLE_SIMPLE_MODELS[MODEL_NAME] = f"{MODULE}.ArrcocLMMS"  # what `lmms-eval models` lists


class ArrcocLMMS(lmms):
    """lmms-eval's `lmms` interface over `Pipeline.__call__` (module docstring: the model_args)."""

    is_simple = True

    def __init__(self, pretrained: str = "lab", policy: str = "arrcoc", budget: Any = None,
                 device: str | None = None, max_new_tokens: int | None = None, vlm_path: str | None = None,
                 **kwargs) -> None:
        from ..pipeline import load_pipeline  # here, so that lmms-eval's start-up scan of entry points stays light

        super().__init__()
        unknown = sorted(set(kwargs) - set(_RUNNER_ARGS))
        if unknown:
            raise InputError(f"unknown model_args {unknown} for --model {MODEL_NAME}; accepted: {', '.join(MODEL_ARGS)}")
        batch_size = kwargs.get("batch_size")
        if batch_size not in (None, 1, "1", "auto"):
            log.warning(f"batch_size={batch_size}: the arrcoc pipeline answers one request at a time (images it "
                        "has seen are cached, so questions about the same image reuse its SAM features)")
        self._rank = int(os.environ.get("RANK", 0))
        self._world_size = int(os.environ.get("WORLD_SIZE", 1))
        if device is None and self._world_size > 1:
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"  # one process per GPU (accelerate launch)
        self.pretrained, self.max_new_tokens = str(pretrained), check_max_new_tokens(max_new_tokens)
        # pretrained=hf-vlm needs the VLM's folder (vlm_path=DIR); a saved hf-vlm folder carries it
        self.pipe = load_pipeline(self.pretrained, device=device, **({"vlm_path": vlm_path} if vlm_path else {}))
        self.policy, self.budget = str(policy), budget
        self.pipe.resolve(self.policy, self.budget)  # a bad policy or budget fails now, before any task loads
        self.records: list[dict] = []  # one per answer: task, split, doc_id, num_tokens, budget, policy, tier
        self._warned: set[str] = set()

    @property
    def device(self):
        return self.pipe.device

    @property
    def batch_size(self) -> int:
        return 1

    # ------------------------------------------------------------------ lmms-eval's request types
    def generate_until(self, requests: list[Instance]) -> list[GenerationResult]:
        from tqdm import tqdm

        out = []
        for request in tqdm(requests, desc=f"{MODEL_NAME} answering", disable=self.rank != 0):
            context, gen_kwargs, doc_to_visual, doc_id, task, split = request.args[:6]
            image = self._image(doc_to_visual, task, split, doc_id)
            answer = self.pipe(image, context, budget=self.budget, policy=self.policy,
                               max_new_tokens=self._max_new_tokens(gen_kwargs or {}))
            self.records.append({"task": task, "split": split, "doc_id": doc_id, "num_tokens": answer.num_tokens,
                                 "budget": answer.budget, "policy": answer.policy, "tier": answer.tier})
            text = cut_at_stop(answer.answer, (gen_kwargs or {}).get("until"))
            out.append(GenerationResult(text=text, token_counts=TokenCounts(input_tokens=answer.num_tokens)))
        if self.records:
            mean = sum(r["num_tokens"] for r in self.records) / len(self.records)
            log.info(f"{MODEL_NAME}: {len(self.records)} answers so far, {mean:.1f} visual tokens each on average")
        return out

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        raise NotImplementedError(
            f"--model {MODEL_NAME} answers generate_until tasks only (DocVQA, TextVQA, ChartQA, …): the "
            "pipeline's contract, pipe(image, query, budget, policy), gives greedy answers, not the "
            "log-likelihood of a given continuation that multiple-choice (loglikelihood) tasks score")

    def generate_until_multi_round(self, requests) -> list[str]:
        raise NotImplementedError(f"--model {MODEL_NAME} answers one question per image; multi-round "
                                  "generation is not supported")

    # ------------------------------------------------------------------ helpers
    def _image(self, doc_to_visual, task: str, split: str, doc_id):
        """The first image of the request's document (several → the first, logged once per task)."""
        if doc_to_visual is None:
            raise InputError(f"task {task!r} gives no doc_to_visual: --model {MODEL_NAME} needs an image per question")
        visuals = flatten(doc_to_visual(self.task_dict[task][split][doc_id]))
        if not visuals:
            raise InputError(f"task {task!r} ({split}, doc {doc_id}) has no image: --model {MODEL_NAME} needs one")
        if len(visuals) > 1 and task not in self._warned:
            self._warned.add(task)
            log.warning(f"task {task!r} gives {len(visuals)} images per question; --model {MODEL_NAME} reads "
                        "only the first")
        return visuals[0]

    def _max_new_tokens(self, gen_kwargs: dict) -> int | None:
        if self.max_new_tokens is not None:  # model_args win over the task
            return self.max_new_tokens
        wanted = gen_kwargs.get("max_new_tokens")
        if wanted is None:
            return None
        return max(1, min(int(wanted), MAX_NEW_TOKENS))


def flatten(visuals) -> list:
    """doc_to_visual's result as a flat list (tasks return one image, a list, or nested lists)."""
    if visuals is None:
        return []
    if not isinstance(visuals, (list, tuple)):
        return [visuals]
    return [v for item in visuals for v in flatten(item)]


def cut_at_stop(text: str, until) -> str:
    """The answer up to the first of the task's stop strings (`until`: a string or a list)."""
    stops = [until] if isinstance(until, str) else list(until or [])
    for stop in stops:
        if stop and stop in text:
            text = text.split(stop, 1)[0]
    return text


def main(argv: list[str] | None = None) -> None:
    """`python -m arrcoc_lab.evaluation.lmms_eval_model ARGS` = `lmms-eval ARGS`, with `arrcoc` registered."""
    register()
    from lmms_eval.cli.dispatch import main as lmms_eval_main

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    lmms_eval_main()


if __name__ == "__main__":
    main()
