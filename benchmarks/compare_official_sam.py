"""Compare vrpsam's SAM / MobileSAM with the official implementations, end to end through the predictor.

Both sides get the same seeded random weights at a realistic scale (so small bugs do not hide under the
tolerance), written as official-layout state dicts and loaded through
``vrpsam.sam_model_registry[name](checkpoint=path)`` on our side. Both predictors then see one real
photo (centre-cropped to ``--aspect`` so padding and cropping are exercised) with point, box and mask
prompts in both multimask modes. Printed: max abs differences of the image embedding, the low-res
logits, the IoU predictions and the full-size mask logits, and the fraction of differing mask pixels.

Usage (official checkouts are the folders holding ``segment_anything/`` and ``mobile_sam/``):

    python benchmarks/compare_official_sam.py --official-sam ../ref/facebookresearch+segment-anything \\
        [--official-mobilesam ../ref/ChaoningZhang+MobileSAM] [--image PATH]

torchvision and timm are replaced by tiny stand-ins (PIL resize, identity DropPath), as the official
code only needs them for those few functions. Exit status 1 when a difference exceeds ``--tolerance``.
A ViT-B forward at 1024² takes about 20 s per side on a small CPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vrpsam.testing import realistic_state_dict

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VRPSAM_SHARED", REPO.parent / "shared"))
DEFAULT_IMAGE = SHARED / "assets/data/persam-examples/cat_00.jpg"


def install_stubs() -> None:
    """Stand-ins for the few torchvision/timm functions the official code imports."""

    def module(name: str, **attrs) -> types.ModuleType:
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        sys.modules[name] = mod
        return mod

    def to_pil_image(array):
        return Image.fromarray(np.asarray(array))

    def resize(image, size):  # torchvision's PIL path: size is (h, w), bilinear
        return image.resize((size[1], size[0]), Image.BILINEAR)

    class DropPath(torch.nn.Module):
        def __init__(self, drop_prob: float = 0.0) -> None:
            super().__init__()

        def forward(self, x):
            return x

    def to_2tuple(x):
        return tuple(x) if isinstance(x, (tuple, list)) else (x, x)

    def unavailable(*args, **kwargs):
        raise NotImplementedError("torchvision.ops is stubbed out in this comparison")

    module("torchvision")
    module("torchvision.transforms")
    module("torchvision.transforms.functional", resize=resize, to_pil_image=to_pil_image)
    module("torchvision.ops")
    module("torchvision.ops.boxes", batched_nms=unavailable, box_area=unavailable)
    module("timm")
    module("timm.models")
    module("timm.models.layers", DropPath=DropPath, to_2tuple=to_2tuple, trunc_normal_=torch.nn.init.trunc_normal_)
    module("timm.models.registry", register_model=lambda fn: fn)


def load_photo(path: Path, aspect: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB, centre-cropped to the W:H ``aspect`` unless it is 'none'."""
    image = np.array(Image.open(path).convert("RGB"))
    if aspect == "none":
        return image
    aw, ah = (float(v) for v in aspect.split(":"))
    h, w = image.shape[:2]
    if w / h > aw / ah:
        new_w, new_h = int(round(h * aw / ah)), h
    else:
        new_w, new_h = w, int(round(w * ah / aw))
    top, left = (h - new_h) // 2, (w - new_w) // 2
    return np.ascontiguousarray(image[top : top + new_h, left : left + new_w])


def prompt_cases(h: int, w: int, low_res_mask: np.ndarray) -> dict[str, dict]:
    """Named predictor keyword sets in original-image pixels."""
    one_point = {"point_coords": np.array([[0.45 * w, 0.55 * h]]), "point_labels": np.array([1])}
    two_points = {"point_coords": np.array([[0.45 * w, 0.55 * h], [0.1 * w, 0.1 * h]]), "point_labels": np.array([1, 0])}
    box = {"box": np.array([0.2 * w, 0.25 * h, 0.8 * w, 0.9 * h])}
    return {
        "1 point": one_point,
        "2 points (+/-)": two_points,
        "box": box,
        "box + point": {**box, **one_point},
        "point + mask": {**one_point, "mask_input": low_res_mask},
        "mask only": {"mask_input": low_res_mask},
    }


def max_abs(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


def compare(name: str, official_sam, official_predictor_cls, state_path: Path, image: np.ndarray) -> float:
    """Run both predictors on ``image``; print the differences and return the worst one."""
    import vrpsam

    ours_sam = vrpsam.sam_model_registry[name](checkpoint=state_path)
    official, ours = official_predictor_cls(official_sam), vrpsam.SamPredictor(ours_sam)

    print(f"\n[{name}] image {image.shape[1]}x{image.shape[0]} (WxH)")
    for side, predictor in (("official", official), ("ours", ours)):
        start = time.perf_counter()
        predictor.set_image(image)
        print(f"  set_image {side}: {time.perf_counter() - start:.2f} s (one run; noisy)")
    emb = max_abs(official.features, ours.features)
    print(f"  input {ours.input_size} (HxW); image embedding: max abs diff {emb:.3g}"
          f" (embedding max |x| {official.features.abs().max():.3g})")

    h, w = image.shape[:2]
    _, _, seed_low_res = official.predict(point_coords=np.array([[0.5 * w, 0.5 * h]]), point_labels=np.array([1]))
    worst = emb
    print(f"  {'prompt':<16}{'multi':>6}{'low-res':>11}{'iou':>11}{'logits':>11}{'pixels':>10}{'|logit|max':>12}")
    for label, kwargs in prompt_cases(h, w, seed_low_res[:1]).items():
        for multimask in (True, False):
            o_logits, o_iou, o_low = official.predict(**kwargs, multimask_output=multimask, return_logits=True)
            u_logits, u_iou, u_low = ours.predict(**kwargs, multimask_output=multimask, return_logits=True)
            diffs = [max_abs(o_low, u_low), max_abs(o_iou, u_iou), max_abs(o_logits, u_logits)]
            flipped = float(np.mean((o_logits > 0) != (u_logits > 0)))
            worst = max(worst, *diffs)
            print(
                f"  {label:<16}{str(multimask):>6}{diffs[0]:>11.3g}{diffs[1]:>11.3g}{diffs[2]:>11.3g}"
                f"{flipped:>10.2g}{np.abs(o_logits).max():>12.3g}"
            )
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official-sam", type=Path, required=True, help="segment-anything checkout")
    parser.add_argument("--official-mobilesam", type=Path, help="MobileSAM checkout (adds vit_t)")
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--aspect", default="4:3", help="centre-crop to W:H before use, or 'none'")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--skip-vit-b", action="store_true", help="only MobileSAM (needs --official-mobilesam)")
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # progress shows while the slow encoders run

    install_stubs()
    image = load_photo(args.image, args.aspect)
    worst = {}
    with tempfile.TemporaryDirectory() as tmp:
        sys.path.insert(0, str(args.official_sam))
        from segment_anything import SamPredictor as OfficialSamPredictor
        from segment_anything import sam_model_registry as official_registry

        if not args.skip_vit_b:
            torch.manual_seed(args.seed)
            official = official_registry["vit_b"]()
            state = realistic_state_dict(official, args.seed)
            path = Path(tmp) / "sam_vit_b_random.pth"
            torch.save(state, path)
            official.load_state_dict(state)
            worst["vit_b"] = compare("vit_b", official.eval(), OfficialSamPredictor, path, image)
            del official, state

        if args.official_mobilesam is not None:
            sys.path.insert(0, str(args.official_mobilesam))
            from mobile_sam import SamPredictor as OfficialMobilePredictor
            from mobile_sam import sam_model_registry as official_mobile_registry

            official = official_mobile_registry["vit_t"]()
            state = realistic_state_dict(official, args.seed + 1)
            path = Path(tmp) / "mobile_sam_random.pt"
            torch.save(state, path)
            official.load_state_dict(state)
            # MobileSAM caches attention biases in eval(); its builder calls eval() before loading,
            # so eval() again here to compare against the loaded weights, not stale zeros.
            worst["vit_t"] = compare("vit_t", official.eval(), OfficialMobilePredictor, path, image)

    print("\nworst max abs diff: " + ", ".join(f"{k} {v:.3g}" for k, v in worst.items()), f"(tolerance {args.tolerance:g})")
    return 0 if worst and max(worst.values()) <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
