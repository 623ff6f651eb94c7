"""Writes notebooks/09_encoder_pretrain.ipynb: pre-training of the lab SAM encoder before it is
frozen (arrcoc_lab/training/encoder_pretrain.py), with the acceptance check — a sign-text probe on its
features before and after, against the pixel ceiling. Run `python notebooks/build_encoder.py`
after changing it; the notebook is committed.

    arrcoc-lab run-phase encoder        # reports/lab/encoder/, weights in runs/lab/encoder/
"""
from pathlib import Path

from build_notebooks import write_notebook

PARAMS = """# parameters
preset = "lab"
steps = 300
batch_size = 8
n_scenes = 3000          # SceneBench train images (questions unused)
lr = 1e-3
seed = 0
device = "cpu"           # cpu | cuda
mixed_precision = "no"   # no | bf16
run_dir = "runs/lab/encoder"          # checkpoints and the pre-trained model.safetensors (git-ignored)
output_dir = "reports/lab/encoder"    # report: executed notebook, metrics.json, figures, config
resume = True
probe_scenes = 3000      # scenes whose number signs the text probe reads (their SAM features are cached for phase 0)
probe_epochs = 20
cache_dir = "cache"
"""

SETUP = """import json, logging, warnings
from dataclasses import asdict
from pathlib import Path
import matplotlib.pyplot as plt
import torch
from IPython.display import Image, display
from arrcoc_lab import load_pipeline
from arrcoc_lab.training.encoder_pretrain import EncoderPretrainConfig, pretrain_encoder, reconstruct, scene_pixels
from arrcoc_lab.evaluation.probe import crop_windows, probe_text, text_labels
from arrcoc_lab.training.config import TrainConfig
from arrcoc_lab.training.sampling import load_train_data
from arrcoc_lab.evaluation.viz_report import training_curves_figure
from arrcoc_lab.checkpoint import atomic_write_text

logging.basicConfig(level=logging.WARNING)
warnings.filterwarnings("ignore", category=UserWarning)
out = Path(output_dir); out.mkdir(parents=True, exist_ok=True)
pipe = load_pipeline(preset, weights="random")  # the seeded random initialisation
if device != "cpu":
    pipe.model.to(device)
cfg = EncoderPretrainConfig(n_scenes=n_scenes, steps=steps, batch_size=batch_size, lr=lr, seed=seed, device=device,
                            mixed_precision=mixed_precision, log_every=max(1, min(10, steps // 4)),
                            ckpt_every=max(1, min(100, steps // 2)))
print(cfg)"""

DATA = """pixels = scene_pixels(pipe.model, cfg)
print(f"{len(pixels)} images of {cfg.data}, {tuple(pixels.shape[1:])} uint8")"""

TRAIN = """def text_probe(model):
    data = load_train_data(model, TrainConfig(n_scenes=probe_scenes, cache_dir=cache_dir, progress=False))
    return probe_text(model, data, epochs=probe_epochs, heads=("max", "cnn"), pixels=True, stages=("sam",)), data

before, _ = text_probe(pipe.model)  # the random SAM, as phase 0 would otherwise freeze it
result = pretrain_encoder(pipe.model, pixels, cfg, run_dir, resume=resume, pipeline_config=pipe.config.to_dict())
after, data = text_probe(pipe.model)
print(f"{result.steps} steps; last log row: {json.dumps(result.history[-1])}")"""

CURVES = """training_curves_figure(result.history, out / "training_curves.png", title="encoder pre-training")
display(Image(str(out / "training_curves.png")))"""

RECON = """scenes, boxes, _ = text_labels(data)
rows = data.scenes.rows(scenes[:4])
px = data.scenes.pixels[rows].to(next(pipe.model.parameters()).device)
rec = reconstruct(pipe.model, result.decoder, px).cpu()
win = lambda x: crop_windows(x.float(), boxes[:4], pipe.geometry.image_size, 96).byte()  # (4, 3, 96, 96)
fig, axes = plt.subplots(2, 4, figsize=(8, 4.2))
for j, (a, b) in enumerate(zip(win(px.cpu()), win(rec))):
    axes[0, j].imshow(a.permute(1, 2, 0)); axes[1, j].imshow(b.permute(1, 2, 0))
    axes[0, j].set_title("image" if j == 0 else ""); axes[1, j].set_title("rebuilt from F" if j == 0 else "")
for a in axes.flat:
    a.axis("off")
fig.tight_layout(); fig.savefig(out / "reconstruction.png", dpi=80); plt.close(fig)
display(Image(str(out / "reconstruction.png")))"""

CHECK = """def table(rs):
    return {f"{r.head}/{r.stage}": round(r.test_accuracy, 4) for r in rs}

probe = {"random_sam": table(before), "pretrained_sam": table(after), "majority": round(after[0].chance, 4)}
for head in ("max", "cnn"):
    print(f"{head:4s} probe, first digit: pixels {probe['pretrained_sam'][head + '/pixels']:.3f}  "
          f"random SAM {probe['random_sam'][head + '/sam']:.3f}  pre-trained SAM {probe['pretrained_sam'][head + '/sam']:.3f}"
          f"  (majority {probe['majority']:.3f})")
fig, ax = plt.subplots(figsize=(5, 3))
labels = ["pixels", "random SAM", "pre-trained SAM"]
for k, head in enumerate(("max", "cnn")):
    vals = [probe["pretrained_sam"][f"{head}/pixels"], probe["random_sam"][f"{head}/sam"], probe["pretrained_sam"][f"{head}/sam"]]
    ax.bar([i + 0.4 * k for i in range(3)], vals, width=0.4, label=f"{head} probe")
ax.axhline(probe["majority"], color="k", ls=":", label="majority")
ax.set_xticks([i + 0.2 for i in range(3)], labels); ax.set_ylabel("first-digit accuracy"); ax.legend(fontsize=7)
fig.tight_layout(); fig.savefig(out / "text_probe.png", dpi=100); plt.close(fig)
display(Image(str(out / "text_probe.png")))"""

SAVE = """metrics = {"steps": result.steps, "final": result.history[-1], "text_probe": probe, "weights": result.weights,
           "probe_samples": len(text_labels(data)[2]), "probe_epochs": probe_epochs}
atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2, default=float))
atomic_write_text(out / "config.json", json.dumps({"pipeline": pipe.config.to_dict(), "encoder_pretrain": asdict(cfg)},
                                                  indent=2, default=str))
atomic_write_text(out / "history.json", json.dumps(result.history, indent=1))
print("report written to", out)"""


def build() -> Path:
    return write_notebook("09_encoder_pretrain.ipynb",
                          "# Encoder pre-training — the lab SAM learns to keep detail, then is frozen\n\n"
                          "No pretrained SAM can be downloaded here, and a randomly initialised one keeps too little "
                          "sign text for any downstream to read. Before phase 0, the lab SAM is trained without labels: "
                          "a per-patch decoder must rebuild every patch's pixels from its features (edge-weighted "
                          "squared error). The acceptance check is a first-digit probe on number signs from SAM's "
                          "features, before and after, against the same probe on the pixels.\n\n"
                          "Run it with papermill: `arrcoc-lab run-phase encoder`; phase 0 then starts from "
                          "`runs/lab/encoder/model.safetensors`.",
                          PARAMS, [
                              SETUP,
                              ("md", "## Images: SceneBench train, rendered at the model's size"), DATA,
                              ("md", "## Probe the random encoder, pre-train, probe again"), TRAIN,
                              ("md", "## Losses"), CURVES,
                              ("md", "## Sign windows rebuilt from the pre-trained features"), RECON,
                              ("md", "## Acceptance: sign text readable from SAM features"), CHECK, SAVE])


if __name__ == "__main__":
    build()
