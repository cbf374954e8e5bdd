"""Side-by-side speed of our SAM image encoders and the official ones, with identical random weights.

    python benchmarks/sam_encoder_speed.py --official-sam PATH/segment-anything \\
        [--official-mobilesam PATH/MobileSAM] [--models vit_b,vit_t] [--repeats 3] [--threads 2]

For each model the official encoder is built from the given checkout (its ``modeling`` files are
imported directly, so its package ``__init__`` and their torchvision/timm imports are not needed),
given realistic random weights (N(0, 1/fan_in) matrices, norms near 1, non-trivial BatchNorm
statistics and position tables), and the same state dict is loaded strictly into ours. Both run on
the same input; the script prints their max abs difference, then times them interleaved (the order
alternates every repetition, so both see the same machine load) and prints a Markdown table of
medians. ``vit_t`` (MobileSAM's TinyViT) needs ``--official-mobilesam`` and ``vrpsam.sam.tiny_vit``.
Not used by the tests.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import types
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vrpsam.sam.image_encoder import VIT_CONFIGS, build_vit
from vrpsam.testing import realistic_
from vrpsam.weights import load_into

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


def _namespace_package(name: str, path: Path) -> None:
    """Register ``name`` as a package rooted at ``path`` without running its ``__init__.py``."""
    module = types.ModuleType(name)
    module.__path__ = [str(path)]
    sys.modules[name] = module


def _stub_timm() -> None:
    """The three timm helpers MobileSAM's TinyViT imports (timm itself is not installed here)."""

    class DropPath(nn.Module):
        def __init__(self, drop_prob: float = 0.0) -> None:
            super().__init__()
            self.drop_prob = drop_prob

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x  # benchmarks run in eval mode, where drop path is the identity

    layers = types.ModuleType("timm.models.layers")
    layers.DropPath = DropPath
    layers.to_2tuple = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    layers.trunc_normal_ = nn.init.trunc_normal_
    registry = types.ModuleType("timm.models.registry")
    registry.register_model = lambda fn: fn
    for name, module in [("timm", types.ModuleType("timm")), ("timm.models", types.ModuleType("timm.models")),
                         ("timm.models.layers", layers), ("timm.models.registry", registry)]:
        sys.modules.setdefault(name, module)


def official_vit(checkout: Path, name: str, img_size: int) -> nn.Module:
    _namespace_package("segment_anything", checkout / "segment_anything")
    _namespace_package("segment_anything.modeling", checkout / "segment_anything" / "modeling")
    from segment_anything.modeling.image_encoder import ImageEncoderViT

    cfg = VIT_CONFIGS[name]
    return ImageEncoderViT(  # the arguments of segment_anything/build_sam.py
        img_size=img_size,
        embed_dim=cfg.embed_dim,
        depth=cfg.depth,
        num_heads=cfg.num_heads,
        global_attn_indexes=cfg.global_attn_indexes,
        mlp_ratio=4,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        patch_size=16,
        qkv_bias=True,
        use_rel_pos=True,
        window_size=14,
        out_chans=256,
    )


def official_tiny_vit(checkout: Path, img_size: int) -> nn.Module:
    _stub_timm()
    _namespace_package("mobile_sam", checkout / "mobile_sam")
    _namespace_package("mobile_sam.modeling", checkout / "mobile_sam" / "modeling")
    from mobile_sam.modeling.tiny_vit_sam import TinyViT

    return TinyViT(  # the arguments of mobile_sam/build_sam.py
        img_size=img_size,
        in_chans=3,
        num_classes=1000,
        embed_dims=[64, 128, 160, 320],
        depths=[2, 2, 6, 2],
        num_heads=[2, 4, 5, 10],
        window_sizes=[7, 7, 14, 7],
        mlp_ratio=4.0,
        drop_rate=0.0,
        drop_path_rate=0.0,
        use_checkpoint=False,
        mbconv_expand_ratio=4.0,
        local_conv_size=3,
        layer_lr_decay=0.8,
    )


def test_image(path: str | None, img_size: int) -> torch.Tensor:
    """(1, 3, S, S) normalised input: the photo at ``path`` resized to S x S, or seeded noise."""
    if path is None:
        return torch.randn(1, 3, img_size, img_size, generator=torch.Generator().manual_seed(1))
    from PIL import Image

    image = Image.open(path).convert("RGB").resize((img_size, img_size), Image.BILINEAR)
    x = torch.from_numpy(np.asarray(image, dtype=np.float32).copy()).permute(2, 0, 1)
    mean, std = torch.tensor(PIXEL_MEAN)[:, None, None], torch.tensor(PIXEL_STD)[:, None, None]
    return ((x - mean) / std)[None]


def model_pair(name: str, args: argparse.Namespace) -> tuple[nn.Module, nn.Module]:
    """(official, ours) for model ``name``, ours holding the official's random weights."""
    if name == "vit_t":
        from vrpsam.sam.tiny_vit import build_tiny_vit

        official, ours = official_tiny_vit(args.official_mobilesam, args.img_size), build_tiny_vit(args.img_size)
    else:
        official, ours = official_vit(args.official_sam, name, args.img_size), build_vit(name, args.img_size)
    realistic_(official, seed=0)
    load_into(ours, official.state_dict(), source=f"official {name}")
    # eval() after the weights are in place: MobileSAM caches its attention biases in eval()
    return official.eval(), ours.eval()


def seconds(model: nn.Module, x: torch.Tensor) -> float:
    start = time.perf_counter()
    model(x)
    return time.perf_counter() - start


def measure(name: str, x: torch.Tensor, args: argparse.Namespace) -> dict[str, float]:
    official, ours = model_pair(name, args)
    with torch.no_grad():
        diff = (official(x) - ours(x)).abs().max().item()  # also the warm-up run of each
        times: dict[str, list[float]] = {"official": [], "ours": []}
        for rep in range(args.repeats):
            order = ["official", "ours"] if rep % 2 == 0 else ["ours", "official"]
            for who in order:
                times[who].append(seconds(official if who == "official" else ours, x))
    result = {who: statistics.median(t) for who, t in times.items()}
    runs = {who: " ".join(f"{t:.2f}" for t in ts) for who, ts in times.items()}
    print(f"{name}: official runs {runs['official']} s; ours runs {runs['ours']} s", flush=True)
    return {**result, "diff": diff}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official-sam", type=Path, required=True, help="segment-anything checkout")
    parser.add_argument("--official-mobilesam", type=Path, help="MobileSAM checkout (needed for vit_t)")
    parser.add_argument("--models", default="vit_b,vit_t", help="comma-separated: vit_b, vit_l, vit_h, vit_t")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each encoder (after one warm-up)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--img-size", type=int, default=1024)
    parser.add_argument("--image", help="photo to encode (default: seeded noise)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    models = [m for m in args.models.split(",") if m]
    if "vit_t" in models and args.official_mobilesam is None:
        print("skipping vit_t: --official-mobilesam not given")
        models.remove("vit_t")
    unknown = [m for m in models if m not in (*VIT_CONFIGS, "vit_t")]
    if unknown:
        parser.error(f"--models: unknown {', '.join(unknown)}")

    x = test_image(args.image, args.img_size)
    load_before = os.getloadavg()[0]
    rows = [(m, measure(m, x, args)) for m in models]
    load_after = os.getloadavg()[0]

    print(
        f"\ntorch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs, input {tuple(x.shape)}"
        f" ({'photo' if args.image else 'noise'}), median of {args.repeats} interleaved runs after one warm-up,"
        f" 1-min load average {load_before:.1f} -> {load_after:.1f}\n"
    )
    print("| model | official s | ours s | speed-up (official/ours) | max abs diff |")
    print("|---|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['official']:.2f} | {r['ours']:.2f} | {r['official'] / r['ours']:.2f} | {r['diff']:.1e} |")


if __name__ == "__main__":
    main()
