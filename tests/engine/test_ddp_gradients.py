"""Two gloo processes under torchrun compute the gradients of one process holding both their batches.

Each rank's loss is the mean over its own batch and DDP averages the gradients over ranks, so with
equal per-rank batches the result is the gradient of the mean loss over the global batch. The ranks
draw disjoint episodes (global indices rank·B .. rank·B + B - 1) whose union is the single-process
batch. Dropout is switched off for this check (see ``ddp_probe.py``): by design each rank draws its
own Dropout2d masks, which no single process reproduces.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import torch

PROBE = Path(__file__).with_name("ddp_probe.py")


def load_probe():
    spec = importlib.util.spec_from_file_location("ddp_probe", PROBE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_two_ranks_match_one_process_with_the_global_batch(shared, monkeypatch, tmp_path):
    monkeypatch.setenv("VRPSAM_WEIGHTS", str(shared("assets/weights/mobilenet_v2")))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    dataset = f"yolo:{shared('assets/data/coco128-seg')}"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(PROBE), str(tmp_path), dataset, "2"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert done.returncode == 0, done.stderr[-3000:]
    load_probe().main(str(tmp_path), dataset, 4)

    ranks = [torch.load(tmp_path / f"grads_rank{r}_of2.pt") for r in range(2)]
    single = torch.load(tmp_path / "grads_rank0_of1.pt")
    assert ranks[0]["index"].tolist() == [0, 1] and ranks[1]["index"].tolist() == [2, 3]
    assert single["index"].tolist() == [0, 1, 2, 3]
    # The global mean loss is the mean of the per-rank means.
    assert abs(((ranks[0]["loss"] + ranks[1]["loss"]) / 2).item() - single["loss"].item()) < 1e-5
    grads = single["grads"]
    assert len(grads) > 10
    scale = max(g.abs().max().item() for g in grads.values())
    assert scale > 1e-6  # real gradients, not zeros
    for name, expected in grads.items():
        for rank in ranks:
            diff = (rank["grads"][name] - expected).abs().max().item()
            assert diff < 1e-5, f"{name}: rank grads differ from one process by {diff:.2e}"
        assert torch.equal(ranks[0]["grads"][name], ranks[1]["grads"][name])  # DDP leaves every rank the same
