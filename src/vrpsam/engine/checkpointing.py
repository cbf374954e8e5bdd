"""Training checkpoints: the model file any tool can load, plus what exact resumption needs.

A checkpoint called ``NAME`` in the run folder is two files, each written atomically (a temporary file
in the same folder, then ``os.replace``), so a crash or a concurrent reader never sees half a file:

* ``NAME.safetensors``: the trainable VRP weights only (:func:`vrpsam.vrp.checkpoint.save_vrp_checkpoint`,
  loadable by ``load_vrp_encoder`` / ``build_vrp_sam(checkpoint=...)``), with metadata: the training
  config, fold, annotation, epoch, iteration, metrics and the code version;
* ``NAME.state.pt``: the training state (optimizer, scheduler, loss scaler, RNG states of Python,
  NumPy and torch, epoch, iteration, best metric), read back with ``torch.load(weights_only=True)``.

:func:`load_training_state` accepts either file of the pair.
"""

from __future__ import annotations

import io
import os
import platform
import random
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import PIL
import torch

from ..errors import CheckpointError
from ..io.atomic import atomic_write_bytes

if TYPE_CHECKING:
    from ..vrp.encoder import VRPEncoder

MODEL_SUFFIX = ".safetensors"
STATE_SUFFIX = ".state.pt"
STATE_FORMAT = "vrpsam.training_state"
STATE_VERSION = 1


@dataclass(frozen=True)
class CheckpointPaths:
    model: Path
    state: Path


def checkpoint_paths(out_dir: str | os.PathLike, name: str) -> CheckpointPaths:
    folder = Path(out_dir)
    return CheckpointPaths(model=folder / f"{name}{MODEL_SUFFIX}", state=folder / f"{name}{STATE_SUFFIX}")


def code_version() -> dict[str, Any]:
    """``vrpsam.__version__``, its git commit when the package runs from a checkout (else None), and what
    else a CPU run's exact numbers depend on: Python, torch, NumPy and Pillow versions, torch's thread
    count and the CPU instruction set its kernels were chosen for (AVX2, AVX512...). The same seed, code
    and threads gave lite's training losses differing in the seventh digit in another session's
    environment."""
    from .. import __version__

    return {
        "vrpsam": __version__,
        "git_commit": _git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def _git_commit() -> str | None:
    source = Path(__file__).resolve().parent
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and len(commit) == 40 else None


# ---- random number generators


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and, if used, CUDA) generator states, in weights_only-loadable types."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.random.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    saved = state["numpy"]
    np.random.set_state(
        (saved["kind"], saved["keys"].numpy().astype(np.uint32), saved["position"], saved["has_gauss"], saved["cached_gaussian"])
    )
    torch.random.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---- saving and loading


def save_checkpoint(
    out_dir: str | os.PathLike,
    name: str,
    *,
    encoder: "VRPEncoder",
    metadata: Mapping[str, Any],
    training_state: Mapping[str, Any] | None,
) -> CheckpointPaths:
    """Write ``NAME.safetensors`` (weights + ``metadata`` + code version) and, if given, ``NAME.state.pt``.

    The state file is written first, so a model file never points at a state from another iteration
    when the pair is read back after a crash between the two writes (the state is then merely newer).
    """
    from ..vrp.checkpoint import save_vrp_checkpoint

    paths = checkpoint_paths(out_dir, name)
    if training_state is not None:
        state = {"format": STATE_FORMAT, "version": STATE_VERSION, **training_state}
        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write_bytes(paths.state, buffer.getvalue())
    save_vrp_checkpoint(encoder, paths.model, {**metadata, "code_version": code_version()})
    return paths


def pair_for(path: str | os.PathLike) -> CheckpointPaths:
    """Both files of a checkpoint, given either of them."""
    path = Path(path)
    for suffix in (STATE_SUFFIX, MODEL_SUFFIX):
        if path.name.endswith(suffix) and len(path.name) > len(suffix):
            return checkpoint_paths(path.parent, path.name[: -len(suffix)])
    raise CheckpointError(f"{path}: expected a training checkpoint (NAME{MODEL_SUFFIX} or NAME{STATE_SUFFIX})")


def load_training_state(path: str | os.PathLike) -> dict[str, Any]:
    """The training state saved with a checkpoint (either file of the pair may be given)."""
    state_path = pair_for(path).state
    if not state_path.is_file():
        raise CheckpointError(f"{state_path}: no training state to resume from (only {STATE_SUFFIX} files hold one)")
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unpickling failure means the file is not ours or is damaged
        raise CheckpointError(f"{state_path}: not a readable training state ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{state_path}: not a vrpsam training state")
    if state.get("version") != STATE_VERSION:
        raise CheckpointError(f"{state_path}: training-state version {state.get('version')!r}, this vrpsam reads {STATE_VERSION}")
    return state
