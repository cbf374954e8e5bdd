"""Gradients of one training step, dumped to a file: run under torchrun (one file per rank) or alone.

    python -m torch.distributed.run --standalone --nproc_per_node 2 ddp_probe.py OUT DATASET 2
    python ddp_probe.py OUT DATASET 4

Used by ``test_ddp_gradients.py``. The VRP encoder runs in eval mode here: Dropout2d draws its masks
per rank from that rank's generator (by design, so ranks do not share masks), which no single process
can reproduce; with dropout off the step is deterministic and the gradients must agree.
"""

from __future__ import annotations

import sys

import torch

from vrpsam.engine.config import TrainConfig
from vrpsam.engine.train import Trainer


def main(out: str, dataset: str, batch_size: int) -> None:
    torch.set_num_threads(1)
    config = TrainConfig.with_preset(
        "tiny", dataset=dataset, batch_size=batch_size, epochs=1, iters_per_epoch=1, num_queries=8,
        validate_every=0, out_dir=out, tensorboard=False,
    )
    trainer = Trainer(config, progress=False)
    try:
        trainer.model.encoder.eval()  # Dropout2d off (see the module docstring)
        batch = next(trainer.batches(0))
        trainer.optimizer.zero_grad(set_to_none=True)
        loss = trainer.forward_backward(batch)
        grads = {name: p.grad.detach().clone() for name, p in trainer.model.encoder.trainable_modules().named_parameters()}
        torch.save({"loss": loss, "index": batch["index"], "grads": grads}, f"{out}/grads_rank{trainer.rank}_of{trainer.world}.pt")
    finally:
        trainer.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
