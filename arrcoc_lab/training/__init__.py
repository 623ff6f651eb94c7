"""Training (reports/lab/RUN.md, docs/RESEARCH.md): the phases as data, batch sampling, the losses, one loop for every phase
(CPU, one GPU or many through Accelerate), exact-resume checkpoints, the optional encoder phase and
the phase-0 region reader."""
