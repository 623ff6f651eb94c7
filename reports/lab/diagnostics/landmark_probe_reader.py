import sys, torch, numpy as np, torch.nn.functional as F
from arrcoc_lab import load_pipeline
from arrcoc_lab.training.config import TrainConfig
from arrcoc_lab.training.sampling import load_train_data, family_of
from arrcoc_lab.evaluation.reading_probe import reading_accuracy
steps, pool = int(sys.argv[1]), int(sys.argv[2])
pipe = load_pipeline("lab", weights="random"); m = pipe.model
data = load_train_data(m, TrainConfig(data="scenebench:train@2000", batch_size=32, progress=False))
ix = [i for i, q in enumerate(data.questions) if family_of(q) == "landmark"]
rows = data.scenes.rows([data.scene_index[i] for i in ix])
x = F.avg_pool2d(data.scenes.features[rows].float(), pool)
cfg = m.llm.cfg
from dataclasses import replace
llm = replace(cfg, question_embedding=False) if hasattr(cfg, "question_embedding") else cfg
r = reading_accuracy(x, [data.answers[i] for i in ix], steps=steps, batch=32, reader="llm",
                     questions=[data.questions[i] for i in ix], llm=llm, eval_every=25)
print(r.curve, r.heldout_exact, r.train_exact)
