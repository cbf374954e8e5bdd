"""Compare our VRP encoder with the official one, through an official-format checkpoint.

    python benchmarks/compare_official_vrp.py --official-vrp /path/to/syp2ysy+VRP-SAM [--backbone resnet50]

Builds the official ``VRP_encoder`` (its backbone starts random: the hard-coded weight paths are not
read), draws seeded realistic weights into it (He-scaled convolutions, BatchNorm statistics measured on
the images themselves, N(0, 1/fan_in) VRP layers), saves its DDP-style state dict (``module.`` keys) as
``best_model.pt``, loads that file with :func:`vrpsam.vrp.checkpoint.load_official_vrp_checkpoint`, and
compares the prompt tokens for a real reference/target pair at 512x512 in eval mode.

With ``--sam vit_b`` it also compares end-to-end logits: the official repository's own SAM wrapper
(``SAM2pred.py``'s recipe on its vendored ``segment_anything``: the 512² target upsampled to 1024² with
corners aligned, prompts as sparse embeddings, ``no_mask_embed``, one mask, logits upsampled to 512²)
against ``vrpsam.build_vrp_sam(sam="vit_b", sam_checkpoint=..., checkpoint=best_model.pt)``, both with
the same seeded random SAM weights saved in the official layout.

The official annotation generators are used as they are: whatever map the official forward builds for
``--condition`` (it returns it) is what our encoder receives.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from vrpsam.testing import realistic_

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO.parent / "shared" / "assets" / "data" / "persam-examples"
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official-vrp", required=True, type=Path, help="checkout of syp2ysy/VRP-SAM")
    parser.add_argument("--backbone", default="resnet50", choices=["resnet50", "vgg16"])
    parser.add_argument("--condition", default="mask", choices=["mask", "box", "point", "scribble"])
    parser.add_argument("--reference", type=Path, default=EXAMPLES / "cat_00.jpg")
    parser.add_argument("--mask", type=Path, default=EXAMPLES / "cat_00.png")
    parser.add_argument("--target", type=Path, default=EXAMPLES / "cat_01.jpg")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--sam", choices=["vit_b"], help="also compare end-to-end logits with this SAM (random weights)")
    return parser.parse_args()


def import_official(root: Path):
    """The official ``model.VRP_encoder`` module, with fvcore stubbed (imported there, never used)."""
    fvcore = types.ModuleType("fvcore")
    fvcore.nn = types.ModuleType("fvcore.nn")
    fvcore.nn.weight_init = types.ModuleType("fvcore.nn.weight_init")
    sys.modules.setdefault("fvcore", fvcore)
    sys.modules.setdefault("fvcore.nn", fvcore.nn)
    sys.modules.setdefault("fvcore.nn.weight_init", fvcore.nn.weight_init)
    sys.path.insert(0, str(root))
    import model.base.resnet as official_resnet
    import model.base.vgg as official_vgg
    import model.VRP_encoder as official

    # The official builders read hard-coded weight paths when pretrained=True; start random instead.
    for module, name in ((official_resnet, "resnet50"), (official_resnet, "resnet101"), (official_vgg, "vgg16_bn")):
        builder = getattr(module, name)
        setattr(module, name, lambda pretrained=False, _builder=builder, **kw: _builder(pretrained=False, **kw))
    return official


def import_official_sam(root: Path):
    """The official repository's vendored (prompt-aware) ``segment_anything``.

    Its predictor module imports torchvision, which this comparison never calls: a stub stands in.
    """
    stubs = {
        "torchvision.transforms.functional": ("resize", "to_pil_image"),
        "torchvision.ops.boxes": ("batched_nms", "box_area"),
    }
    for name, attributes in stubs.items():
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):
            sys.modules.setdefault(".".join(parts[:depth]), types.ModuleType(".".join(parts[:depth])))
        for attribute in attributes:
            setattr(sys.modules[name], attribute, None)
    sys.path.insert(0, str(root / "segment-anything"))
    import segment_anything

    return segment_anything


@torch.no_grad()
@torch.no_grad()
def official_sam_logits(sam: nn.Module, target: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
    """SAM2pred's forward (no feature cache): (B, 1, 512, 512) logits from the 512² target and prompts."""
    size = target.shape[-2:]
    features = sam.image_encoder(nn.functional.interpolate(target, (1024, 1024), mode="bilinear", align_corners=True))
    sparse, dense = sam.prompt_encoder(points=None, boxes=None, protos=prompts, masks=None)
    low_res, _ = sam.mask_decoder(
        image_embeddings=features,
        image_pe=sam.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=False,
    )
    return nn.functional.interpolate(low_res, size=size, mode="bilinear", align_corners=True)


def load_image(path: Path, size: int) -> torch.Tensor:
    """(1, 3, size, size) ImageNet-normalised, PIL bilinear resize (the official dataset transform)."""
    image = Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR)
    array = (np.asarray(image, dtype=np.float32) / 255.0 - MEAN) / STD
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0)


def load_mask(path: Path, size: int) -> torch.Tensor:
    """(1, size, size) float {0, 1}: nonzero pixels, nearest-resized as the official dataset does."""
    mask = torch.from_numpy((np.asarray(Image.open(path)) > 0).astype(np.float32))
    return nn.functional.interpolate(mask[None, None], size=(size, size), mode="nearest")[:, 0]


@torch.no_grad()
def randomise(model: nn.Module, images: torch.Tensor) -> None:
    """Seeded realistic weights; BatchNorm statistics are measured on ``images`` so activations stay sane."""
    backbone = [model.layer0, model.layer1, model.layer2, model.layer3, model.layer4]
    for stage in backbone:
        for m in stage.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.normal_(0, (2 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.normal_(0, 0.05)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.reset_running_stats()
                m.momentum = None  # cumulative average: one pass stores that batch's statistics
    x = images
    for stage in backbone:
        stage.train()
        x = stage(x)
        stage.eval()
    for name, p in model.named_parameters():
        if name.startswith("layer"):
            continue
        if name.endswith("supp_q_feat.weight"):
            p.normal_(0, 1)
        elif p.dim() > 1:
            p.normal_(0, p[0].numel() ** -0.5)
        elif name.endswith("norm.weight"):
            p.normal_(1, 0.1)
        else:
            p.normal_(0, 0.05)


def main() -> int:
    args = parse_args()
    official = import_official(args.official_vrp.resolve())
    from vrpsam.vrp.checkpoint import load_official_vrp_checkpoint

    torch.manual_seed(args.seed)
    reference = load_image(args.reference, args.size)
    target = load_image(args.target, args.size)
    mask = load_mask(args.mask, args.size)

    theirs = official.VRP_encoder(types.SimpleNamespace(num_query=50), args.backbone, False)
    randomise(theirs, torch.cat([reference, target]))
    theirs.eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "best_model.pt"
        torch.save({"module." + k: v for k, v in theirs.state_dict().items()}, path)
        ours = load_official_vrp_checkpoint(path)
        print(f"official checkpoint: {len(theirs.state_dict())} tensors; ours: backbone {ours.backbone_name}, {ours.num_queries} queries")

        with torch.no_grad():
            torch.manual_seed(args.seed)
            expected, annotation = theirs(args.condition, target, reference, mask, False)
            prompts = ours(target, reference, annotation.float())
        diff = (prompts - expected).abs().max().item()
        print(f"condition {args.condition}: annotation covers {int(annotation.sum())} px of {args.size}x{args.size}")
        print(f"prompts {tuple(prompts.shape)}, mean |official| {expected.abs().mean().item():.4f}")
        print(f"max abs diff {diff:.3e} (tolerance {args.tolerance:g})")
        if args.sam is None:
            return 0 if diff <= args.tolerance else 1

        official_sam = import_official_sam(args.official_vrp.resolve()).sam_model_registry[args.sam]()
        realistic_(official_sam, args.seed + 1)
        official_sam.eval()
        sam_path = Path(tmp) / "sam.pth"
        torch.save(official_sam.state_dict(), sam_path)
        from vrpsam.vrp.build import build_vrp_sam

        model = build_vrp_sam(sam=args.sam, sam_checkpoint=sam_path, checkpoint=path, preprocessing="official")
        with torch.no_grad():
            theirs_logits = official_sam_logits(official_sam, target, expected)
            our_logits = model(target, reference, annotation.float())
    logit_diff = (our_logits - theirs_logits).abs().max().item()
    flipped = ((our_logits > 0) != (theirs_logits > 0)).float().mean().item()
    print(f"end-to-end logits {tuple(our_logits.shape)} with SAM {args.sam}: mean |official| {theirs_logits.abs().mean().item():.4f}, "
          f"foreground {(theirs_logits > 0).float().mean().item():.1%}")
    print(f"max abs diff {logit_diff:.3e} (tolerance {args.tolerance:g}); mask pixels differing {flipped:.2e}")
    return 0 if max(diff, logit_diff) <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
