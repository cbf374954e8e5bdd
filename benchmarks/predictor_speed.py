"""Time per extra target of VRPPredictor, against its floor, with the reference cached.

The floor is what no implementation can skip for a new target: SAM's image encoder on it plus the VRP
backbone's forward on it. Both are timed in the same run, interleaved with the predictor.

    python benchmarks/predictor_speed.py [--sam vit_b] [--backbone resnet50_v2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import interleaved_medians, markdown_table  # noqa: E402

from vrpsam.io.images import load_image, load_mask  # noqa: E402
from vrpsam.vrp.build import build_vrp_sam  # noqa: E402
from vrpsam.vrp.predictor import VRPPredictor  # noqa: E402
from vrpsam.vrp.preprocess import Frame, normalised_tensor  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "assets" / "data" / "persam-examples"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sam", default="vit_b", help="sam_model_registry name (random weights)")
    parser.add_argument("--backbone", default="resnet50_v2")
    parser.add_argument("--preprocessing", default="official", choices=["official", "standard"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--data", type=Path, default=DATA, help="folder with cat_00.jpg/.png and cat_01.jpg")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model = build_vrp_sam(sam=args.sam, sam_checkpoint=None, backbone=args.backbone, preprocessing=args.preprocessing)
    predictor = VRPPredictor(model)
    reference, mask = load_image(args.data / "cat_00.jpg"), load_mask(args.data / "cat_00.png")
    target = load_image(args.data / "cat_01.jpg")
    predictor.set_reference(reference, mask=mask)

    frame = Frame.for_image(target.shape[:2], model.input_size, model.preprocessing)
    sam_frame = Frame.for_image(target.shape[:2], model.sam_size, model.preprocessing)
    backbone = model.encoder.backbone

    @torch.no_grad()
    def floor() -> None:
        x = normalised_tensor(target, frame)
        sam_in = model.sam_input(x) if model.preprocessing == "official" else normalised_tensor(target, sam_frame)
        model.sam.image_encoder(sam_in)
        backbone.layer4(backbone.layer3(backbone.layer2(backbone.layer1(backbone.layer0(x)))))

    floor_s, predict_s = interleaved_medians([floor, lambda: predictor.predict(target)], args.repeats)
    ratio = predict_s / floor_s
    print(f"threads={torch.get_num_threads()} repeats={args.repeats} target={target.shape[1]}x{target.shape[0]}")
    print(
        markdown_table(
            ["sam", "backbone", "preprocessing", "floor s (SAM encoder + backbone)", "per target s", "ratio", "overhead"],
            [[args.sam, args.backbone, args.preprocessing, f"{floor_s:.3f}", f"{predict_s:.3f}", f"{ratio:.3f}", f"{(ratio - 1) * 100:+.1f}%"]],
        )
    )


if __name__ == "__main__":
    main()
