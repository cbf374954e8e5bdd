"""Time of the prior calibration (``vrpsam.engine.calibrate``) against a full evaluation per setting.

The calibration encodes each validation episode once and decodes it under every prior setting. The
baseline is what it replaced: :func:`vrpsam.engine.evaluate.evaluate` once per setting, with the lite
model's frozen features memoised across passes as they are in training. Both are timed in the same
run, interleaved, on the shipped lite weights and coco128-seg episodes, and must give the same mIoUs.

    python benchmarks/calibration_speed.py [--episodes 8] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import interleaved_medians, markdown_table  # noqa: E402

from vrpsam.data.sources import open_source  # noqa: E402
from vrpsam.engine.calibrate import calibrate_prior, prior_settings, setting_name  # noqa: E402
from vrpsam.engine.evaluate import evaluate  # noqa: E402
from vrpsam.vrp.build import build_lite  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "assets" / "data" / "coco128-seg"
# Validation classes of the shipped lite run (checkpoints/lite/training.json): car, bird, sheep.
CLASSES = (2, 14, 18)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="a coco128-seg folder (YOLO layout)")
    parser.add_argument("--annotation", default="box", choices=["point", "box", "scribble", "mask"])
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = build_lite().eval()
    prior = model.prior
    trained = float(prior.scale.detach()), float(prior.bias.detach()), float(prior.self_support)
    source = open_source(f"yolo:{args.data}")
    options = dict(annotation=args.annotation, classes=list(CLASSES), episodes=args.episodes, progress=False)
    settings = prior_settings()
    measured: dict[str, dict[str, float]] = {}

    def per_setting() -> None:
        mious = {}
        for multiplier, offset, self_support in settings:
            prior.set_weights(trained[0] * multiplier, trained[1] + offset, self_support)
            mious[setting_name(multiplier, offset, self_support)] = evaluate(model, source, **options).miou
        measured["per setting"] = mious
        prior.set_weights(*trained)

    def one_encoding() -> None:
        annotation = options["annotation"]
        rest = {k: v for k, v in options.items() if k != "annotation"}
        chosen = calibrate_prior(model, source, annotations=[annotation], **rest)
        measured["one encoding"] = chosen.val_miou_by_annotation[annotation]
        prior.set_weights(*trained)

    baseline_s, calibrate_s = interleaved_medians([per_setting, one_encoding], args.repeats)
    worst = max(abs(measured["per setting"][k] - measured["one encoding"][k]) for k in measured["per setting"])
    print(f"threads={torch.get_num_threads()} repeats={args.repeats} episodes={args.episodes} "
          f"annotation={args.annotation} settings={len(settings)}")
    print(
        markdown_table(
            ["full evaluation per setting s", "one encoding per episode s", "speed-up", "max mIoU difference"],
            [[f"{baseline_s:.1f}", f"{calibrate_s:.1f}", f"{baseline_s / calibrate_s:.2f}×", f"{worst:.1e}"]],
        )
    )


if __name__ == "__main__":
    main()
