"""Evaluation over several processes (issue 20): `eval` and `bench` under a launcher

    torchrun --nproc_per_node 2 -m arrcoc_lab eval --data scenebench:test --n-scenes 20 …
    accelerate launch --multi_gpu --num_processes 2 -m arrcoc_lab bench …   # on a CPU-only machine too

Each process takes a contiguous block of the split's scenes (`Shard.block`), so it renders and
encodes only its own scenes (into cache files of its block, `SceneRange`), and answers their
questions. The main process gathers every process's rows (`Shard.merge`, accelerate's
`gather_object`), puts them back in the split's order and computes the metrics from all of them.
A row does not depend on which batch its question was in (a batched forward gives what one-by-one
calls give), so the merged metrics equal a one-process run's, timings aside. Only the main process
writes files and prints.

(`accelerate launch --cpu --num_processes 2` starts one process with accelerate 1.15 unless an MPI
hostfile is given; `--multi_gpu` starts torchrun's processes, which join a gloo group on CPUs.)
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace

import torch


@dataclass(frozen=True)
class Shard:
    rank: int = 0  # this process
    world: int = 1  # processes in the run

    @property
    def main(self) -> bool:
        """The process that merges, writes and prints."""
        return self.rank == 0

    def block(self, n: int) -> tuple[int, int]:
        """This process's contiguous share [lo, hi) of n scenes (sizes differ by at most one; the
        main process's is never smaller, so it holds the split's first scene)."""
        return -(-n * self.rank // self.world), -(-n * (self.rank + 1) // self.world)

    def merge(self, positions, rows: list) -> list | None:
        """Every process's rows on the main process, in the order of their positions in the whole
        set (None on the others). Every process calls it, the same number of times."""
        pairs = list(zip(positions, rows, strict=True))
        if self.world > 1:
            from accelerate.utils import gather_object

            pairs = [p for part in gather_object([pairs]) for p in part]
        return [r for _, r in sorted(pairs, key=lambda p: p[0])] if self.main else None

    def gather(self, value) -> list | None:
        """Every process's `value`, in rank order, on the main process (None on the others)."""
        if self.world == 1:
            return [value]
        from accelerate.utils import gather_object

        values = gather_object([value])
        return values if self.main else None


def current_shard(device=None) -> Shard:
    """This process's place among those a launcher started (WORLD_SIZE > 1: torchrun, accelerate
    launch), joining their process group through accelerate's PartialState (gloo on CPUs, nccl
    with a CUDA `device`); a lone process is Shard(0, 1) and starts no group."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Shard()
    from accelerate import PartialState

    state = PartialState(cpu=device is None or torch.device(device).type == "cpu")
    return Shard(state.process_index, state.num_processes)


def process_device(device):
    """The device of this process: a bare "cuda" becomes this process's own GPU (LOCAL_RANK)
    when a launcher started several processes; anything else as given."""
    if device is not None and str(device) == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


def finish(shard: Shard) -> None:
    """Wait for every process, then leave the process group (a lone process has none)."""
    if shard.world > 1 and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


class SceneRange:
    """Scenes [lo, hi) of a synthetic split, as `data.features.encode_scenes` reads a dataset: its
    cache files are named by the range (split "test@lo"), so processes never write the same file.
    `shift` turns the encoded rows' scene ids back into the split's."""

    def __init__(self, dataset, lo: int, hi: int):
        self.dataset, self.lo, self.hi = dataset, lo, hi
        self.NAME, self.split = dataset.NAME, f"{dataset.split}@{lo}"
        self.image_size = dataset.image_size
        self.QUESTIONS_PER_SCENE = q = dataset.QUESTIONS_PER_SCENE
        self.num_scenes = hi - lo
        self.positions = range(lo * q, min(hi * q, len(dataset)))  # its samples' indices in the split

    def __len__(self) -> int:
        return len(self.positions)

    def scene(self, index: int):
        return self.dataset.scene(self.lo + index)

    def shift(self, scenes):
        return replace(scenes, scene_ids=[self.lo + s for s in scenes.scene_ids])
