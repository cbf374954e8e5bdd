"""Reference annotations simulated from ground-truth masks, for training and evaluation.

These follow the official VRP-SAM generators (``VRP_encoder.py`` ``get_point_mask``,
``get_bounding_boxes``, ``get_scribble_mask``; SEEM-style strokes from ``common/utils.py``) with these
deliberate differences, all on the data side (no effect on checkpoints):

- every random draw comes from a per-sample generator passed in (a seed, ``np.random.Generator`` or
  ``torch.Generator``), not from unseeded or global RNGs, so a sample's annotation is reproducible;
- the point count (training) and the stroke count and preset are drawn per sample; the official code
  draws one for the whole batch from the batch's total foreground;
- an empty mask gives an all-zero map instead of crashing.

Everything else is kept: 20 points at evaluation, single-pixel points, a filled tight box over all
foreground, evaluation scribbles with preset ``rand_curve`` and ``random.Random(321).randint(1, min(20,
fg))`` strokes (9 for any mask of >= 20 pixels), the stroke geometry and its draw order, and the start
points' true-division ``y = index / W`` quirk. See docs/annotations.md.

Masks are (H, W) arrays or tensors; foreground is every non-zero pixel. Maps are float32 (H, W) in {0, 1}.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Sequence, Union

import numpy as np
import torch
from PIL import Image, ImageDraw

from vrpsam.errors import InputError

CONDITIONS = ("point", "box", "scribble", "mask")
MAX_POINTS = 20
MAX_STROKES = 20
# The official evaluation draws the stroke count from ``random.Random(321)``; the preset choice from
# the same seed always yields 'rand_curve'.
EVAL_STROKE_SEED = 321
EVAL_STROKE_PRESET = "rand_curve"

Rng = Union[np.random.Generator, torch.Generator, int]


@dataclass(frozen=True)
class StrokePreset:
    """Parameters of the SEEM / free-form random stroke generator (official names in comments).

    Integer draws truncate float bounds as ``np.random.randint`` does: brush (2.5, 5) gives 2..4 and a
    point move of 1.5 gives offsets in {-1, 0}.
    """

    vertex_bounds: tuple[int, int]  # nVertexBound: vertex count in [lo, hi)
    max_head_speed: float  # maxHeadSpeed
    max_head_acceleration: tuple[float, float]  # maxHeadAcceleration: uniform (speed, angle) steps
    brush_width_bounds: tuple[float, float]  # brushWidthBound: width in [lo, hi)
    move_point_ratio: float  # nMovePointRatio: fraction of vertices jittered in the second pass
    max_point_move: float  # maxPiontMove: jitter in [-m, m)
    max_line_acceleration: tuple[float, float]  # maxLineAcceleration: gaussian (speed, angle)
    max_init_speed: float  # maxInitSpeed: the whole-line shift speed is |N(0, m/2)|


STROKE_PRESETS = {
    "rand_curve": StrokePreset((10, 30), 20, (15, 0.5), (3, 10), 0.5, 3, (5, 0.5), 6),
    "rand_curve_small": StrokePreset((6, 22), 12, (8, 0.5), (2.5, 5), 0.5, 1.5, (3, 0.5), 3),
}


def as_rng(rng: Rng) -> np.random.Generator:
    """A NumPy generator from a seed, a NumPy generator (returned as is) or a torch generator."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, torch.Generator):
        return np.random.default_rng(int(torch.randint(2**62, (1,), generator=rng)))
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise InputError(f"rng: expected a seed, np.random.Generator or torch.Generator, got {type(rng).__name__}")


def _foreground(mask: Any) -> np.ndarray:
    """Bool (H, W) foreground of a mask given as an array or tensor."""
    array = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if array.ndim != 2:
        raise InputError(f"mask: expected an (H, W) mask, got shape {array.shape}")
    return array != 0


def simulate_points(mask: Any, rng: Rng, *, training: bool, max_points: int = MAX_POINTS) -> np.ndarray:
    """Single-pixel clicks at distinct random foreground pixels.

    Evaluation: ``min(max_points, fg)`` clicks; training: a count uniform in ``[1, min(max_points, fg)]``.
    """
    fg = _foreground(mask)
    out = np.zeros(fg.shape, dtype=np.float32)
    pixels = np.flatnonzero(fg)
    if len(pixels) == 0:
        return out
    rng = as_rng(rng)
    most = min(max_points, len(pixels))
    count = int(rng.integers(1, most + 1)) if training else most
    out.flat[rng.choice(pixels, size=count, replace=False)] = 1
    return out


def foreground_box(fg: np.ndarray) -> tuple[slice, slice] | None:
    """The tight box of a boolean (H, W) foreground as (row slice, column slice); None if it is empty."""
    rows, cols = np.flatnonzero(fg.any(axis=1)), np.flatnonzero(fg.any(axis=0))
    if not len(rows):
        return None
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def simulate_box(mask: Any) -> np.ndarray:
    """The filled tight box around all foreground pixels (exclusive max, as official); zeros if empty."""
    fg = _foreground(mask)
    out = np.zeros(fg.shape, dtype=np.float32)
    box = foreground_box(fg)
    if box is not None:
        out[box] = 1
    return out


def eval_stroke_count(foreground_pixels: int) -> int:
    """The official evaluation stroke count: ``random.Random(321).randint(1, min(20, fg))`` (9 if fg >= 20)."""
    return random.Random(EVAL_STROKE_SEED).randint(1, min(MAX_STROKES, foreground_pixels))


def simulate_scribble(mask: Any, rng: Rng, *, training: bool, preset: str | None = None) -> np.ndarray:
    """SEEM-style random strokes starting at random foreground pixels, clipped to the mask.

    Evaluation: preset 'rand_curve' and :func:`eval_stroke_count` strokes. Training: preset
    'rand_curve' or 'rand_curve_small' with probability 1/2 each and a stroke count uniform in
    ``[1, min(20, fg)]``. ``preset`` overrides the preset in both modes.
    """
    fg = _foreground(mask)
    pixels = np.flatnonzero(fg)
    if len(pixels) == 0:
        return np.zeros(fg.shape, dtype=np.float32)
    if preset is not None and preset not in STROKE_PRESETS:
        raise InputError(f"preset {preset!r} is not one of {', '.join(STROKE_PRESETS)}")
    rng = as_rng(rng)
    if training:
        chosen = "rand_curve" if rng.random() < 0.5 else "rand_curve_small"
        count = int(rng.integers(1, min(MAX_STROKES, len(pixels)) + 1))
    else:
        chosen, count = EVAL_STROKE_PRESET, eval_stroke_count(len(pixels))
    starts = rng.choice(pixels, size=min(count, len(pixels)), replace=False)
    width = fg.shape[1]
    # Official quirk kept: y is the flat index divided (true division, float32) by W, i.e. row + col/W.
    xy = np.stack([(starts % width).astype(np.float32), starts.astype(np.float32) / np.float32(width)], axis=1)
    strokes = random_strokes(xy, fg.shape, STROKE_PRESETS[preset or chosen], rng)
    return (strokes & fg).astype(np.float32)


def random_strokes(starts: np.ndarray, size: tuple[int, int], preset: StrokePreset, rng: Any) -> np.ndarray:
    """Bool (H, W) canvas with one random stroke per start point ``(x, y)`` in ``starts`` (N, 2).

    ``rng`` needs ``integers``, ``uniform``, ``normal`` and ``permutation``. The draws follow the official
    order, including two unused gaussian draws, so that a stream equal to NumPy's legacy global RNG
    reproduces the official strokes pixel for pixel.
    """
    strokes = [_stroke_control_points(start, preset, rng) for start in starts]
    # The official generator draws every stroke once, throws that canvas away, and draws the strokes
    # again after a whole-line shift and a vertex jitter; only the second canvas is used.
    moved = [(_moved_control_points(xs, ys, velocity, preset, rng), brush) for xs, ys, velocity, brush in strokes]
    canvas = Image.new("1", (size[1], size[0]), 0)
    draw = ImageDraw.Draw(canvas)
    for (xs, ys), brush in moved:
        radius = brush // 2 - 1
        for i in range(1, len(xs)):
            draw.line((xs[i - 1], ys[i - 1], xs[i], ys[i]), fill=1, width=brush)
        for x, y in zip(xs, ys):
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=1)
    return np.asarray(canvas, dtype=bool).copy()


def _randint(rng: Any, low: float, high: float) -> int:
    """``np.random.randint(low, high)`` semantics: float bounds truncate toward zero, high exclusive."""
    return int(rng.integers(int(low), int(high)))


def _stroke_control_points(start: np.ndarray, preset: StrokePreset, rng: Any):
    """Brush width and vertices of one stroke: a head moving with a randomly accelerated velocity."""
    brush = _randint(rng, *preset.brush_width_bounds)
    n_vertex = _randint(rng, *preset.vertex_bounds)
    angle = rng.uniform(0, 2 * np.pi)
    speed = rng.uniform(0, preset.max_head_speed)
    d_speed, d_angle = preset.max_head_acceleration
    xs, ys = [float(start[0])], [float(start[1])]
    for _ in range(n_vertex):
        speed = speed + rng.uniform(-d_speed, d_speed)
        angle = angle + rng.uniform(-d_angle, d_angle)
        speed = min(max(speed, 0.0), preset.max_head_speed)
        # As official: x follows sin and y follows cos of the head angle.
        xs.append(xs[-1] + speed * np.sin(angle))
        ys.append(ys[-1] + speed * np.cos(angle))
    line_speed = abs(rng.normal(0, preset.max_init_speed / 2))
    line_angle = rng.uniform(0, 2 * np.pi)
    return np.array(xs), np.array(ys), (line_speed, line_angle), brush


def _moved_control_points(xs: np.ndarray, ys: np.ndarray, velocity, preset: StrokePreset, rng: Any):
    """The stroke shifted by its (integer-truncated) velocity, with half of its vertices jittered."""
    speed, angle = velocity
    xs = xs + int(speed * np.cos(angle))
    ys = ys + int(speed * np.sin(angle))
    d_speed, d_angle = preset.max_line_acceleration
    rng.normal(0, d_speed / 2)  # the official line acceleration: drawn, never used
    rng.normal(0, d_angle / 2)
    chosen = rng.permutation(len(xs))[: int(len(xs) * preset.move_point_ratio)]
    for i in chosen:
        xs[i] += _randint(rng, -preset.max_point_move, preset.max_point_move)
        ys[i] += _randint(rng, -preset.max_point_move, preset.max_point_move)
    return xs, ys


def simulate(mask: Any, condition: str, rng: Rng, *, training: bool) -> np.ndarray:
    """The ``condition`` annotation ('point', 'box', 'scribble' or 'mask') of one (H, W) mask."""
    if condition == "point":
        return simulate_points(mask, rng, training=training)
    if condition == "box":
        return simulate_box(mask)
    if condition == "scribble":
        return simulate_scribble(mask, rng, training=training)
    if condition == "mask":
        return _foreground(mask).astype(np.float32)
    raise InputError(f"condition {condition!r} is not one of {', '.join(CONDITIONS)}")


def simulate_batch(masks: torch.Tensor, condition: str, rngs: Sequence[Rng], *, training: bool) -> torch.Tensor:
    """:func:`simulate` per sample: masks (B, H, W) or (B, 1, H, W) -> float maps of the same shape and device.

    ``rngs`` holds one seed or generator per sample (length B).
    """
    if masks.dim() not in (3, 4) or (masks.dim() == 4 and masks.shape[1] != 1):
        raise InputError(f"masks: expected (B, H, W) or (B, 1, H, W), got {tuple(masks.shape)}")
    if len(rngs) != masks.shape[0]:
        raise InputError(f"rngs: expected one per sample ({masks.shape[0]}), got {len(rngs)}")
    flat = masks.reshape(masks.shape[0], *masks.shape[-2:])
    maps = [torch.from_numpy(simulate(m, condition, r, training=training)) for m, r in zip(flat, rngs)]
    return torch.stack(maps).reshape(masks.shape).to(masks.device)
