"""Hugging Face transformers classes around the pipeline: `ArrcocConfig` (model_type "arrcoc") and
`ArrcocModel`, registered with AutoConfig and AutoModel when this module is imported, as
transformers integrations do. `import arrcoc_lab` stays light and does not import transformers;
`arrcoc_lab.ArrcocModel` (or `import arrcoc_lab.hf`) does.

    import arrcoc_lab.hf
    from transformers import AutoModel
    model = AutoModel.from_pretrained("runs/lab/hf", local_files_only=True)
    out = model(image, "What's the formula on the billboard?", budget=64)   # = model.pipeline(...)

One forward path: ArrcocModel.forward calls its Pipeline (`model.pipeline`), which calls
ARRCOC.forward. Weights load and save through the pipeline's own folder format (config.json,
model.safetensors, README.md; `Pipeline.save_pretrained`, `load_pipeline(folder)`), so the
integrity checks (keys, shapes, NaN/Inf, sha256) and the model card are the same either way.
"""
from __future__ import annotations

import tempfile
from dataclasses import fields
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel

from .checkpoint import ARCHITECTURES, MODEL_TYPE
from .errors import CheckpointError, InputError
from .modeling.presets import PRESETS, PipelineConfig, get_preset
from .pipeline import RANDOM, Pipeline, PipelineOutput, check_device, load_pipeline

SECTIONS = tuple(f.name for f in fields(PipelineConfig))
# from_pretrained / save_pretrained / push_to_hub arguments that transformers passes along and that
# a pipeline folder has no use for (it is one safetensors file in float32, on one device)
LOAD_PASSED = {"_from_auto", "_from_pipeline", "trust_remote_code", "adapter_kwargs", "code_revision", "force_download",
               "proxies", "low_cpu_mem_usage", "attn_implementation", "use_safetensors", "weights_only"}
SAVE_PASSED = {"max_shard_size", "safe_serialization", "token", "variant", "save_peft_format", "save_original_format",
               "tags"}


class ArrcocConfig(PretrainedConfig):
    """The pipeline's resolved PipelineConfig as a transformers config: the same sections, flat, as
    config.json holds them (preset, geometry, sam, query, relevance, ..., llm, weights, probes, seed).
    Sections left out come from the named preset: ArrcocConfig(preset="tiny") is the tiny pipeline."""
    model_type = MODEL_TYPE

    @classmethod
    def from_pipeline_config(cls, cfg: PipelineConfig) -> "ArrcocConfig":
        return cls(**cfg.to_dict(), architectures=list(ARCHITECTURES))

    def to_pipeline_config(self) -> PipelineConfig:
        d = {k: v for k, v in self.to_dict().items() if k in SECTIONS}
        name = d.get("preset", "lab")
        if set(SECTIONS) - set(d) and name in PRESETS:
            d = {**get_preset(name).to_dict(), **d}
        return PipelineConfig.from_dict(d)


class ArrcocModel(PreTrainedModel):
    """The ARR-COC pipeline as a transformers model. `model(image, query, budget, policy)` is
    `model.pipeline(image, query, budget, policy)`: a PipelineOutput (answer, num_tokens,
    tokens_per_cell, relevance, ...). The ARRCOC module is the submodule `arrcoc`, shared with the
    pipeline, so `.to(device)`, `.eval()` and `.parameters()` act on the pipeline's model."""
    config_class = ArrcocConfig
    base_model_prefix = "arrcoc"
    main_input_name = "image"
    _no_split_modules = ["ARRCOC"]  # one device: the stages run in sequence on the pipeline's device

    def __init__(self, config: ArrcocConfig, pipeline: Pipeline | None = None):
        super().__init__(config)
        self.post_init()  # before the stages are attached: transformers' weight initialisation never touches them
        if pipeline is None:  # as any PreTrainedModel(config): the configuration at its seeded initialisation
            pipeline = load_pipeline(config=config.to_pipeline_config(), weights=RANDOM)
        self.arrcoc = pipeline.model
        self._pipeline = pipeline

    @property
    def pipeline(self) -> Pipeline:
        """The Pipeline this model wraps: the one inference path (resolve, encode, ARRCOC.forward)."""
        return self._pipeline

    def forward(self, image, query: str, budget=None, policy: str = "arrcoc",
                max_new_tokens: int | None = None) -> PipelineOutput:
        """One question about one image, exactly as `pipe(image, query, budget, policy)`."""
        return self._pipeline(image, query, budget=budget, policy=policy, max_new_tokens=max_new_tokens)

    @classmethod
    def from_pipeline(cls, pipeline: Pipeline) -> "ArrcocModel":
        """A loaded pipeline as a transformers model (sharing its model, not copying it)."""
        return cls(ArrcocConfig.from_pipeline_config(pipeline.config), pipeline=pipeline)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, config: ArrcocConfig | None = None,
                        device_map=None, dtype=None, torch_dtype=None, cache_dir=None, local_files_only: bool = False,
                        revision: str | None = None, token=None, subfolder: str = "", **kwargs) -> "ArrcocModel":
        """A folder written by save_pretrained (or a Hub repository holding one, read through the
        Hugging Face cache; HF_HUB_OFFLINE / local_files_only keep that offline), loaded by
        `load_pipeline(folder)` with its checks. `config` (what AutoModel read from config.json)
        replaces the folder's; `device_map` is one device ("cpu", "cuda", "auto")."""
        unknown = sorted(set(kwargs) - LOAD_PASSED)
        if model_args or unknown:
            raise InputError(f"ArrcocModel.from_pretrained does not take {list(model_args) + unknown}")
        for d in (dtype, torch_dtype):
            if d not in (None, "auto", "float32", torch.float32):
                raise InputError(f"ArrcocModel runs in float32 (the pipeline's inputs are float32), got dtype {d!r}")
        folder = _local_folder(pretrained_model_name_or_path, subfolder, cache_dir, local_files_only, revision, token)
        cfg = config.to_pipeline_config() if isinstance(config, ArrcocConfig) else None
        pipe = load_pipeline(folder, config=cfg, device=_device(device_map))
        model = cls.from_pipeline(pipe)
        model.config.name_or_path = str(pretrained_model_name_or_path)
        return model.eval()

    def save_pretrained(self, save_directory, is_main_process: bool = True, push_to_hub: bool = False,
                        evaluation=None, training: str | dict | None = None, dtype: torch.dtype | None = None,
                        **kwargs) -> None:
        """`Pipeline.save_pretrained`: config.json, model.safetensors and the model card README.md
        (evaluation, training, dtype as there). transformers' sharding options do not apply."""
        unknown = sorted(set(kwargs) - SAVE_PASSED)
        if unknown:
            raise InputError(f"ArrcocModel.save_pretrained does not take {unknown} (it saves the pipeline's own tensors)")
        if push_to_hub:
            raise InputError("save_pretrained(push_to_hub=True) is not supported: call model.push_to_hub(repo_id)")
        if is_main_process:
            self._pipeline.save_pretrained(save_directory, evaluation=evaluation, training=training, dtype=dtype)

    def push_to_hub(self, repo_id: str, *, commit_message: str | None = None, commit_description: str | None = None,
                    private: bool | None = None, token=None, revision: str | None = None, create_pr: bool = False,
                    evaluation=None, training: str | dict | None = None, dtype: torch.dtype | None = None, **kwargs):
        """Upload the saved folder (config.json, model.safetensors and its own model card) to the top
        of a Hub repository, created if needed. (transformers' push_to_hub would replace the card.)"""
        from huggingface_hub import HfApi

        unknown = sorted(set(kwargs) - SAVE_PASSED)
        if unknown:
            raise InputError(f"ArrcocModel.push_to_hub does not take {unknown}")
        api = HfApi(token=token)
        repo = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        with tempfile.TemporaryDirectory() as tmp:
            self._pipeline.save_pretrained(tmp, evaluation=evaluation, training=training, dtype=dtype)
            return api.upload_folder(repo_id=repo, folder_path=tmp, revision=revision, create_pr=create_pr,
                                     commit_message=commit_message or f"Upload the ARR-COC {self.config.preset} pipeline",
                                     commit_description=commit_description)


def _local_folder(name, subfolder: str, cache_dir, local_files_only: bool, revision, token) -> Path:
    """A local pipeline folder. Nothing is downloaded at run time: a Hub repository is fetched
    beforehand (huggingface-cli download REPO --local-dir DIR) and loaded from DIR."""
    path = Path(name) / subfolder if subfolder else Path(name)
    if not path.is_dir():
        raise CheckpointError(f"{path} is neither a local pipeline folder nor a Hub repository available here: arrcoc_lab "
                              "loads from disk only; download a "
                              "Hub repository beforehand (huggingface-cli download REPO --local-dir DIR) and pass DIR")
    return path


def _device(device_map) -> torch.device | None:
    if isinstance(device_map, dict):
        devices = set(device_map.values())
        if len(devices) != 1:
            raise InputError(f"ArrcocModel runs on one device; device_map spreads it over {sorted(map(str, devices))}")
        device_map = devices.pop()
    if device_map == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else None
    if isinstance(device_map, int):
        device_map = f"cuda:{device_map}"
    return check_device(device_map)


def register() -> None:
    """Make transformers' AutoConfig and AutoModel know model_type "arrcoc" (safe to call again)."""
    AutoConfig.register(MODEL_TYPE, ArrcocConfig, exist_ok=True)
    AutoModel.register(ArrcocConfig, ArrcocModel, exist_ok=True)


register()
