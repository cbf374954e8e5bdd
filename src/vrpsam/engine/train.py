"""Episodic meta-training of the VRP encoder around a frozen SAM (official recipe, with its bugs fixed).

What :func:`train` does, per the official ``train.py`` (§3.4 of the official-code notes):

* 1-shot episodes over the fold's training classes, images squashed to ``input_size``², no
  augmentation, the reference annotation simulated per episode (``config.annotation``);
* loss BCE + Dice (:mod:`vrpsam.engine.losses`); AdamW (lr 1e-4, wd 1e-6) over the VRP encoder's
  trainable parts only; ``CosineAnnealingLR`` stepped every iteration with ``T_max = epochs ×
  iters_per_epoch``; a validation pass after every epoch, keeping the best model by mIoU.

Differences, all deliberate:

* SAM and the backbone are frozen with ``requires_grad_(False)``: no gradient is ever computed for
  them (official: SAM's decoder grads accumulate unused);
* episodes are a pure function of ``(seed, epoch, global index)``. In iteration ``i`` of an epoch,
  rank ``r`` of ``W`` with per-rank batch ``B`` takes global indices ``i·B·W + r·B + j``, so ranks draw
  *different* episodes (official: COCO episodes duplicated on every rank) and their union is the
  single-process global batch;
* model selection by default on held-out *training* classes (``select_on="val"``: 20% of the fold's
  training classes, chosen by ``config.validation_seed`` (default ``seed``), are left out of training, see
  :func:`vrpsam.data.folds.validation_split`), the test fold only when asked (``select_on="test"``,
  the paper's protocol), or none (``select_on="none"``: every training class trains, for the final run
  of a recipe chosen on held-out classes; lite's prior then takes a given ``prior_setting``).
  ``annotation="mixed"`` is validated with mask references;
* ``ignore_held_out``: held-out objects sit unlabelled in training photos (in coco128, persons in 61
  of 128), so the recipe teaches them as background. With it, their pixels (every class outside the
  training view) are left out of the loss instead. PFENet removes such photos from training; this keeps
  them, which a small dataset cannot spare;
* the torch RNG (dropout) is reseeded every iteration from ``(seed, rank, iteration)``, and the
  optimizer, scheduler and RNG states are checkpointed, so a resumed run continues exactly;
* runs on CPU (DDP over gloo) as well as CUDA (NCCL, optional bf16/fp16 autocast).

Under DDP every rank's loss is the mean over its own batch and DDP averages gradients over ranks,
so the gradient is the one of the mean loss over the global batch.
"""

from __future__ import annotations

import inspect
import math
import time
from contextlib import nullcontext
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader, Dataset

from ..data.augment import AugmentConfig, Augmenter, SameImageEpisodes
from ..data.dataset import EpisodeDataset, collate_episodes
from ..data.episodes import Episode, TrainingEpisodes
from ..data.folds import split_fold, validation_split
from ..data.pseudo import Features, PseudoClassConfig, PseudoClassSource
from ..data.simulate import CONDITIONS
from ..data.sources import open_source
from ..data.transforms import image_tensor
from ..errors import CheckpointError, InputError
from ..sam.build import OFFICIAL_WEIGHTS, sam_model_registry
from ..sam.sam import Sam
from ..vrp.backbones import build_backbone
from ..vrp.build import BUILD_KEY, LITE_BACKGROUND_KEY, TINY_SAM_SIZE, build_lite, build_tiny_sam
from ..vrp.checkpoint import load_vrp_checkpoint
from ..vrp.encoder import VRPEncoder
from ..vrp.model import VRPSAM
from ..vrp.proto import proto_features
from ..weights import load_into
from . import distributed
from .checkpointing import (
    CheckpointPaths,
    checkpoint_paths,
    load_training_state,
    pair_for,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .calibrate import PriorCalibration, apply_prior_setting, calibrate_prior, self_support_weights
from .config import LITE_SAM, TINY_SAM, TrainConfig
from .embedding_cache import EmbeddingCache, sam_identity
from .logging import CsvLog, TensorBoardLog, progress_bar
from .losses import segmentation_loss

LAST, BEST = "last", "best"
# Splits with a separate training part; every other kind trains on its only split.
TRAIN_SPLITS = {"pascal": "train", "coco": "train"}
# Settings a resumed run may change without changing what it computes.
RESUMABLE_CHANGES = {
    "max_iters", "workers", "embedding_cache", "index_cache", "tensorboard", "out_dir", "device", "batch_size", "extra",
    "calibrate_prior", "calibration_episodes", "prior_setting",  # act after the last step only
}  # fmt: skip
VALIDATION_FRACTION = 0.2
_DDP_OPTIONS = inspect.signature(nn.parallel.DistributedDataParallel.__init__).parameters


@dataclass
class StepRecord:
    iteration: int  # 1-based count of optimizer steps taken when this loss was computed
    epoch: int
    loss: float  # mean over the global batch
    lr: float  # the learning rate this step used


@dataclass
class ValidationRecord:
    iteration: int
    epoch: int
    miou: float
    fbiou: float


@dataclass
class TrainResult:
    out_dir: Path
    last: Path  # model file of the last checkpoint
    best: Path | None  # model file of the best validation mIoU, if any validation ran
    best_miou: float | None
    iteration: int  # optimizer steps taken in total (including any before a resume)
    epochs_completed: int
    history: list[StepRecord] = field(default_factory=list)  # the steps this call ran
    validations: list[ValidationRecord] = field(default_factory=list)
    calibration: dict[str, Any] | None = None  # the prior calibration of the last checkpoint, if done
    rank: int = 0  # of the process that returns this (only rank 0 wrote files)


def train(config: TrainConfig, *, resume: str | Path | None = None, progress: bool = True) -> TrainResult:
    """Train per ``config``; ``resume``: a checkpoint of a previous run (``last.safetensors`` or
    ``last.state.pt``) to continue exactly. Works in one process or under ``torchrun``."""
    trainer = Trainer(config, progress=progress)
    try:
        if resume is not None:
            trainer.restore(resume)
        return trainer.run()
    finally:
        trainer.close()


# ---- the model


def build_training_model(config: TrainConfig) -> VRPSAM:
    """VRP-SAM as ``config`` describes it, with freshly initialised VRP parts.

    Random weights are drawn from generators seeded by ``config.seed`` right before they are drawn,
    after every weight file has been read: weight loading may or may not draw random numbers (e.g. a
    first-time TFLite conversion does, a cached one does not), and the initial VRP weights must not
    depend on that. So every rank, and every run with the same seed, starts from the same weights.
    ``sam="tiny"`` is :func:`vrpsam.vrp.build.build_tiny_sam` with seed 0 (image size 128).
    """
    if config.sam == LITE_SAM:
        # Everything but the frozen MobileNetV2 is trained from scratch, drawn from config.seed.
        model = build_lite(None, backbone_checkpoint=config.backbone_checkpoint, seed=config.seed,
                           background_count=config.prior_background_count, feature_dropout=config.feature_dropout)
        prior = model.prior
        scale = prior.scale.item() if config.prior_scale is None else config.prior_scale
        prior.set_weights(scale, prior.bias.item(), config.prior_self_support)
        return model
    torch.manual_seed(config.seed)  # a random backbone (no checkpoint, experiments)
    backbone = build_backbone(config.backbone, config.backbone_checkpoint)
    torch.manual_seed(config.seed)
    encoder = VRPEncoder(backbone, num_queries=config.num_queries, annotation_downsample=config.annotation_downsample)
    return VRPSAM(_build_sam(config), encoder, preprocessing=config.preprocessing, input_size=config.input_size).eval()


def _build_sam(config: TrainConfig) -> Sam:
    if config.sam == TINY_SAM:
        if config.sam_checkpoint is not None or config.image_size != TINY_SAM_SIZE:
            raise InputError(f"sam: the tiny SAM is random (no checkpoint) at image_size {TINY_SAM_SIZE}")
        return build_tiny_sam(0)
    if config.sam not in sam_model_registry:
        raise InputError(f"sam: unknown model {config.sam!r} (known: {', '.join(sam_model_registry)}, {TINY_SAM})")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)  # only matters without a checkpoint (random SAM, for experiments)
        checkpoint = OFFICIAL_WEIGHTS[config.sam] if config.sam_checkpoint == "official" else config.sam_checkpoint
        return sam_model_registry[config.sam](checkpoint=checkpoint, image_size=config.image_size)


class TrainingModel(nn.Module):
    """The differentiable part of one step, given SAM's image embeddings (what DDP wraps).

    K-shot: the prompt tokens of each shot are concatenated (official ``predict_mask_nshot``).
    """

    def __init__(self, vrp: VRPSAM) -> None:
        super().__init__()
        self.vrp = vrp

    def forward(self, target: torch.Tensor, references: torch.Tensor, annotations: torch.Tensor,
                embeddings: torch.Tensor | None) -> torch.Tensor:
        """Target (B, 3, S, S), references (B, K, 3, S, S), annotations (B, K, S, S), embeddings
        (B, 256, h, w) or None when SAM's image encoder trains (then computed here) -> logits (B, 1, S, S)."""
        return self.vrp.forward_shots(target, references, annotations, embeddings=embeddings)


def frozen_parameters(model: VRPSAM) -> list[nn.Parameter]:
    """Every parameter outside the model's trainable parts."""
    trainable = {id(p) for p in model.trainable_parameters()}
    return [p for p in model.parameters() if id(p) not in trainable]


# ---- data


@dataclass
class TrainingData:
    """The training view of the dataset and the validation source of the chosen selection split."""

    train: Any  # SegmentationSource: the fold's training classes (minus held-out validation classes)
    validation: Any  # SegmentationSource for validation passes; None when nothing is held out
    validation_classes: tuple[int, ...]
    images_per_epoch: int  # distinct training images: the official epoch length


def open_training_data(config: TrainConfig) -> TrainingData:
    """Fold split and held-out validation (``select_on="val"``), the test fold (``"test"``) or no
    validation, every training class training (``"none"``)."""
    kind = config.dataset_kind()
    source = open_source(config.dataset, split=TRAIN_SPLITS.get(kind), index_cache=config.index_cache)
    fold = split_fold(source, config.fold)
    if config.select_on == "val":
        train_view, validation = validation_split(source, fold.train, fraction=VALIDATION_FRACTION, seed=config.split_seed())
        validation_classes = tuple(validation.classes)
    elif config.select_on == "none":
        train_view = source.restrict(fold.train, label=f"fold {config.fold} training classes, none held out")
        validation, validation_classes = None, ()
    else:
        train_view = source.restrict(fold.train, label=f"fold {config.fold} training classes")
        validation = open_source(config.dataset, index_cache=config.index_cache) if kind in TRAIN_SPLITS else source
        validation_classes = fold.test
    images = {item for class_id in train_view.classes for item in train_view.items(class_id)}
    if config.ignore_held_out:
        # a view of the source itself, whose masks hold the held-out classes; the images stay the view's
        kept = train_view.classes
        held = [c for c in source.classes if c not in kept]
        train_view = source.restrict(kept, images, label=f"{train_view.label}, held-out classes ignored", ignored=held)
    return TrainingData(train_view, validation, validation_classes, len(images))


def prototype_features(model: VRPSAM, size: int) -> Features:
    """The prototype rule's frozen features of one photo, (C, h, w) float32 unit per cell, squashed to ``size``²."""
    encoder = model.encoder
    device = next(encoder.backbone.parameters()).device

    def features(image: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            target = encoder.encode_target(image_tensor(image, size)[None].to(device))
            return proto_features(target.mid, target.deep, encoder.backbone.channels[0])[0].float().cpu().numpy()

    return features


class MixedAnnotations(Dataset):
    """Episodes whose annotation type is drawn per episode from a generator seeded by
    ``(seed, epoch, index, 3)`` (official: a commented-out per-batch draw): uniformly over the four types,
    or in proportion to ``weights`` (one per :data:`CONDITIONS` entry)."""

    def __init__(self, datasets: dict[str, EpisodeDataset], episodes: Sequence[Episode], seed: int,
                 weights: Sequence[float] | None = None) -> None:
        self.datasets, self.episodes, self.seed = datasets, episodes, seed
        self.probabilities = None if weights is None else np.asarray(weights, dtype=np.float64) / sum(weights)

    def __len__(self) -> int:
        return len(self.episodes)

    def __getitem__(self, i: int) -> dict[str, Any]:
        episode = self.episodes[i]
        rng = np.random.default_rng([self.seed, episode.epoch or 0, episode.index, 3])
        # The uniform draw stays rng.integers, so runs without weights keep their episodes.
        drawn = rng.integers(len(CONDITIONS)) if self.probabilities is None else rng.choice(len(CONDITIONS), p=self.probabilities)
        return self.datasets[CONDITIONS[int(drawn)]][i]


def epoch_dataset(config: TrainConfig, source: Any, episodes: Sequence[Episode]) -> Dataset:
    augment = None
    if config.augment:
        settings = AugmentConfig(copy_paste=config.copy_paste, zoom=config.zoom, views=config.augment_views,
                                 seed=config.seed)
        augment = Augmenter(settings, source)
    if config.same_image:
        episodes = SameImageEpisodes(episodes, config.same_image, config.seed)

    def make(annotation: str) -> EpisodeDataset:
        return EpisodeDataset(source, episodes, size=config.input_size, annotation=annotation, training=True,
                              seed=config.seed, augment=augment)

    if config.annotation == "mixed":
        weights = config.annotation_type_weights() if config.annotation_weights else None
        return MixedAnnotations({c: make(c) for c in CONDITIONS}, episodes, config.seed, weights)
    return make(config.annotation)


def rank_batches(iters: int, start: int, batch_size: int, rank: int, world: int) -> list[list[int]]:
    """Global episode indices of rank ``rank``'s batches for iterations ``start..iters-1`` of an epoch."""
    step = batch_size * world
    return [[i * step + rank * batch_size + j for j in range(batch_size)] for i in range(start, iters)]


def step_seed(seed: int, rank: int, iteration: int) -> int:
    """The torch seed of one rank's iteration (dropout masks): independent streams per rank and step."""
    return int(np.random.SeedSequence([seed, rank, iteration]).generate_state(1, np.uint64)[0] >> 1)


# ---- the loop


class Trainer:
    """One training run: model, optimizer, data and logs for this process (see :func:`train`)."""

    def __init__(self, config: TrainConfig, *, progress: bool = True) -> None:
        config.validate()
        self.config = config
        self.device = _device(config)
        self.csv: CsvLog | None = None
        self.tensorboard: TensorBoardLog | None = None
        self.owns_group = not distributed.is_distributed() and distributed.init_from_env(self.device)
        try:
            self._setup(progress)
        except BaseException:
            self.close()
            raise

    def _setup(self, progress: bool) -> None:
        config = self.config
        self.rank, self.world = distributed.rank(), distributed.world_size()
        self.main = distributed.is_main()
        self.progress = progress and self.main
        self.out_dir = Path(config.out_dir)
        self.data = open_training_data(config)
        self.global_batch = config.global_batch(self.world)
        self.iters_per_epoch = config.iters_per_epoch or max(1, self.data.images_per_epoch // self.global_batch)
        self.total_iters = config.epochs * self.iters_per_epoch
        self.stop_at = min(self.total_iters, config.max_iters or self.total_iters)

        self.model = build_training_model(config).to(self.device)
        if config.pseudo_classes:
            settings = PseudoClassConfig(config.pseudo_classes, seed=config.seed)
            self.data.train = PseudoClassSource(self.data.train, prototype_features(self.model, config.input_size), settings)
        self.trainable = self.model.trainable_parameters()
        if any(p.requires_grad for p in frozen_parameters(self.model)):
            raise RuntimeError("SAM or the backbone has parameters that require gradients; they must stay frozen")
        self.net = self._wrap(TrainingModel(self.model))
        self.optimizer = torch.optim.AdamW(self.trainable, lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.999))
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=self.total_iters)
        self.amp_dtype = _amp_dtype(config, self.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.cache = self._embedding_cache()
        self.average = self._weight_average()

        self.iteration = 0
        self.best_miou: float | None = None
        self.calibration: dict[str, Any] | None = None
        self.resumed_from: int | None = None
        self.start_time = time.monotonic()

    # -- setup helpers

    def _wrap(self, module: nn.Module) -> nn.Module:
        if self.world == 1:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        # Buffers are frozen (backbone BN statistics, SAM tables): no need to sync them every forward.
        no_sync = {"forward_sync_buffers": False} if "forward_sync_buffers" in _DDP_OPTIONS else {"broadcast_buffers": False}
        return nn.parallel.DistributedDataParallel(module, device_ids=ids, find_unused_parameters=False, **no_sync)

    def _weight_average(self) -> AveragedModel | None:
        """The running mean of the trainable weights for ``average_from`` (None without it)."""
        start = self.config.average_from
        if start is None:
            return None
        if start >= self.total_iters:
            raise InputError(f"average_from: {start} leaves no iteration to average; the run has {self.total_iters}")
        return AveragedModel(self.model.trainable_modules())

    def _embedding_cache(self) -> EmbeddingCache | None:
        if self.config.embedding_cache is None:
            return None
        identity = sam_identity(
            self.model.sam.image_encoder,
            preprocessing=self.config.preprocessing,
            sam_size=self.model.sam_size,
            compute_dtype=self.amp_dtype or torch.float32,
        )
        return EmbeddingCache(self.config.embedding_cache, identity, memory_items=256)

    def _open_logs(self) -> None:
        if not self.main:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.config.save(self.out_dir / "config.json")
        self.csv = CsvLog(self.out_dir / "log.csv", resume_after=self.resumed_from)
        self.tensorboard = TensorBoardLog(self.out_dir / "tensorboard", enabled=self.config.tensorboard)

    # -- one step

    def batches(self, epoch: int, start: int = 0) -> Iterator[dict[str, Any]]:
        """This rank's batches for iterations ``start..`` of ``epoch``."""
        config = self.config
        length = config.overfit_episodes or self.iters_per_epoch * self.global_batch
        drawn_in = 0 if config.overfit_episodes else epoch
        episodes = TrainingEpisodes(self.data.train, self.data.train.classes, length, seed=config.seed, shots=config.shots, epoch=drawn_in)
        batches = rank_batches(self.iters_per_epoch, start, config.batch_size, self.rank, self.world)
        loader = DataLoader(
            epoch_dataset(config, self.data.train, episodes),
            batch_sampler=[[index % length for index in batch] for batch in batches],
            num_workers=config.workers,
            collate_fn=collate_episodes,
            pin_memory=self.device.type == "cuda",
        )
        return iter(loader)

    def embeddings(self, target: torch.Tensor) -> torch.Tensor | None:
        """SAM image embeddings (B, 256, h, w) of CPU targets (B, 3, S, S), from the cache when enabled;
        None when part of SAM's image encoder trains (the model computes them, with gradients)."""
        if self.model._image_encoder_trains:
            return None

        def compute(images: torch.Tensor) -> torch.Tensor:
            with self._autocast():
                return self.model.embed(self.model.sam_input(images))

        if self.cache is None:
            return compute(target.to(self.device))
        return self.cache.embed(target, compute, self.device)

    def forward_backward(self, batch: dict[str, Any]) -> torch.Tensor:
        """This rank's loss on ``batch`` (detached) after backpropagating it; gradients are DDP-averaged."""
        device = self.device
        embeddings = self.embeddings(batch["query_img"])
        with self._autocast():
            logits = self.net(
                batch["query_img"].to(device),
                batch["support_imgs"].to(device),
                batch["support_annotations"].to(device),
                embeddings,
            )
        loss = segmentation_loss(logits, batch["query_mask"].to(device), ignore=self.config.ignore_held_out)
        (self.scaler.scale(loss) if self.scaler else loss).backward()
        return loss.detach()

    def step(self, batch: dict[str, Any]) -> StepRecord:
        """One optimizer step on ``batch``; returns the global-batch mean loss and the lr used."""
        epoch = self.iteration // self.iters_per_epoch
        torch.manual_seed(step_seed(self.config.seed, self.rank, self.iteration))
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.forward_backward(batch)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.iteration += 1
        self._update_average()
        mean = distributed.all_reduce_sum(loss.float().reshape(1)).item() / self.world
        if not math.isfinite(mean):
            raise FloatingPointError(f"iteration {self.iteration}: loss is {mean}")
        return StepRecord(self.iteration, epoch, mean, lr)

    def _update_average(self) -> None:
        """Add this iteration's weights to the average; after the run's last iteration the model takes
        the average, so its validation, calibration and ``last`` checkpoint are of the averaged weights."""
        if self.average is None or self.iteration <= self.config.average_from:
            return
        self.average.update_parameters(self.model.trainable_modules())
        if self.iteration == self.total_iters:
            with torch.no_grad():
                for live, mean in zip(self.trainable, self.average.module.parameters(), strict=True):
                    live.copy_(mean)

    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.amp_dtype)

    # -- validation

    def _evaluation_options(self) -> dict[str, Any]:
        """:func:`vrpsam.engine.evaluate.evaluate` settings of every pass on the selection split."""
        config = self.config
        return dict(classes=self.data.validation_classes, shots=config.shots, episodes=config.val_episodes, seed=config.split_seed(),
                    workers=config.workers, batch_size=config.batch_size, device=self.device, progress=False)

    def validate(self, epoch: int) -> ValidationRecord:
        """mIoU / FB-IoU on the selection split with :func:`vrpsam.engine.evaluate.evaluate` (all ranks)."""
        from .evaluate import evaluate

        annotation = "mask" if self.config.annotation == "mixed" else self.config.annotation
        self.model.eval()
        try:
            result = evaluate(self.model, self.data.validation, annotation=annotation, **self._evaluation_options())
        finally:
            self.model.train()
        return ValidationRecord(self.iteration, epoch, float(result.miou), float(result.fbiou))

    def calibrate(self) -> None:
        """Choose the prior's weight on the selection split (:mod:`vrpsam.engine.calibrate`), every
        annotation type trained, or set the given ``prior_setting``; save ``last`` with it (``best``
        keeps its trained weight)."""
        if self.config.prior_setting is not None:
            calibration = apply_prior_setting(self.model, self.config.prior_setting)
        else:
            calibration = self._search_prior_setting()
        self.calibration = calibration.to_dict()
        if self.csv is not None:
            elapsed = time.monotonic() - self.start_time
            for setting, miou in calibration.val_miou.items():
                self.csv.write(kind=f"prior_{setting}", iteration=self.iteration, epoch=self.iteration // self.iters_per_epoch,
                               time=elapsed, miou=miou)
        metrics = {"prior_scale": calibration.scale, "prior_bias": calibration.bias, "prior_self_support": calibration.self_support}
        self.save(LAST, metrics, with_state=True)

    def _search_prior_setting(self) -> PriorCalibration:
        annotations = CONDITIONS if self.config.annotation == "mixed" else (self.config.annotation,)
        self.model.eval()
        try:
            options = self._evaluation_options()
            options["episodes"] = self.config.calibration_episodes or options["episodes"]
            return calibrate_prior(self.model, self.data.validation, annotations=annotations,
                                   self_supports=self_support_weights(self.config.prior_self_support), **options)
        finally:
            self.model.train()

    # -- checkpoints

    def metadata(self, metrics: dict[str, float]) -> dict[str, Any]:
        config = self.config
        return {
            "backbone": config.backbone,
            "training_config": config.to_dict(),
            "dataset": config.dataset,
            "fold": config.fold,
            "annotation": config.annotation,
            "shots": config.shots,
            BUILD_KEY: {
                "sam": config.sam,
                "sam_checkpoint": _as_recorded_path(config.sam_checkpoint),
                "backbone_checkpoint": _as_recorded_path(config.backbone_checkpoint),
                "image_size": config.image_size,
                "input_size": config.input_size,
                "preprocessing": config.preprocessing,
                **({LITE_BACKGROUND_KEY: config.prior_background_count} if config.sam == LITE_SAM else {}),
            },
            "epoch": self.iteration // self.iters_per_epoch,
            "iteration": self.iteration,
            "world_size": self.world,
            "metrics": metrics,
            "prior_calibration": self.calibration,
        }

    def training_state(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "iteration": self.iteration,
            "epoch": self.iteration // self.iters_per_epoch,
            "iters_per_epoch": self.iters_per_epoch,
            "global_batch": self.global_batch,
            "best_miou": self.best_miou,
            "calibration": self.calibration,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "average": self.average.state_dict() if self.average is not None else None,
            "rng": rng_state(),
            "elapsed": time.monotonic() - self.start_time,
        }

    def save(self, name: str, metrics: dict[str, float], *, with_state: bool) -> CheckpointPaths:
        paths = checkpoint_paths(self.out_dir, name)
        if self.main:
            state = self.training_state() if with_state else None
            save_checkpoint(self.out_dir, name, encoder=TrainedParts(self.model), metadata=self.metadata(metrics), training_state=state)
        distributed.barrier()
        return paths

    def restore(self, path: str | Path) -> None:
        """Continue the run saved at ``path`` (either file of a checkpoint pair)."""
        state = load_training_state(path)
        self._check_resumable(state, path)
        model_path = pair_for(path).model
        weights, _ = load_vrp_checkpoint(model_path)
        load_into(self.model.trainable_modules(), weights, source=str(model_path))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        if self.average is not None:
            self.average.load_state_dict(state["average"])
        set_rng_state(state["rng"])
        self.iteration = int(state["iteration"])
        self.best_miou = state["best_miou"]
        self.calibration = state.get("calibration")
        self.resumed_from = self.iteration
        self.start_time = time.monotonic() - float(state["elapsed"])

    def _check_resumable(self, state: dict[str, Any], path: str | Path) -> None:
        current = self.config.to_dict()
        # a setting added after the run was saved had its default then
        defaults = {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}
        saved = {**defaults, **state["config"]}
        changed = sorted(k for k in current if k not in RESUMABLE_CHANGES and saved.get(k) != current[k])
        if changed:
            first = changed[0]
            raise CheckpointError(f"{path}: trained with {first}={saved.get(first)!r}, this run has {current[first]!r}; resume needs the same settings")
        if state["global_batch"] != self.global_batch or state["iters_per_epoch"] != self.iters_per_epoch:
            raise CheckpointError(
                f"{path}: trained with a global batch of {state['global_batch']} ({state['iters_per_epoch']} iterations per epoch); "
                f"this run has {self.global_batch} ({self.iters_per_epoch}): keep batch_size x processes the same"
            )

    # -- the run

    def run(self) -> TrainResult:
        self._open_logs()
        self.model.train()
        last = checkpoint_paths(self.out_dir, LAST).model
        result = TrainResult(self.out_dir, last, None, self.best_miou, self.iteration, 0, rank=self.rank)
        bar = progress_bar(self.stop_at, self.iteration, self.progress, f"train fold {self.config.fold}")
        try:
            while self.iteration < self.stop_at:
                epoch, offset = divmod(self.iteration, self.iters_per_epoch)
                for batch in self.batches(epoch, offset):
                    record = self.step(batch)
                    result.history.append(record)
                    self._log_step(record)
                    bar.update(1)
                    bar.set_postfix(loss=f"{record.loss:.4f}", lr=f"{record.lr:.2e}")
                    if self.iteration >= self.stop_at:
                        break
                if self.iteration % self.iters_per_epoch == 0:
                    self._end_epoch(epoch, result)
            if self.iteration % self.iters_per_epoch or not result.history:
                self.save(LAST, {}, with_state=True)
            wants_prior = self.config.calibrate_prior or self.config.prior_setting is not None
            if wants_prior and self.iteration >= self.total_iters and self.calibration is None:
                self.calibrate()
        finally:
            bar.close()
        result.iteration = self.iteration
        result.epochs_completed = self.iteration // self.iters_per_epoch
        result.best_miou = self.best_miou
        result.calibration = self.calibration
        best = checkpoint_paths(self.out_dir, BEST).model
        result.best = best if self.best_miou is not None and best.exists() else None
        return result

    def _end_epoch(self, epoch: int, result: TrainResult) -> None:
        metrics: dict[str, float] = {}
        every = self.config.validate_every
        if every and (epoch + 1) % every == 0:
            record = self.validate(epoch)
            result.validations.append(record)
            metrics = {"miou": record.miou, "fbiou": record.fbiou}
            self._log_validation(record)
            if self.best_miou is None or record.miou > self.best_miou:
                self.best_miou = record.miou
                self.save(BEST, metrics, with_state=False)
        self.save(LAST, metrics, with_state=True)

    def _log_step(self, record: StepRecord) -> None:
        if self.csv is None:
            return
        elapsed = time.monotonic() - self.start_time
        self.csv.write(kind="train", iteration=record.iteration, epoch=record.epoch, loss=record.loss, lr=record.lr, time=elapsed)
        self.tensorboard.scalar("train/loss", record.loss, record.iteration)
        self.tensorboard.scalar("train/lr", record.lr, record.iteration)

    def _log_validation(self, record: ValidationRecord) -> None:
        if self.csv is None:
            return
        elapsed = time.monotonic() - self.start_time
        self.csv.write(kind="val", iteration=record.iteration, epoch=record.epoch, time=elapsed, miou=record.miou, fbiou=record.fbiou)
        self.tensorboard.scalar("val/miou", record.miou, record.iteration)
        self.tensorboard.scalar("val/fbiou", record.fbiou, record.iteration)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.owns_group:
            distributed.cleanup()


class TrainedParts:
    """What a checkpoint stores of a model: the VRP encoder's settings and every trainable part
    (:meth:`VRPSAM.trainable_modules`: the encoder's alone, official key names, unless SAM parts or
    a prior train too)."""

    def __init__(self, model: VRPSAM) -> None:
        encoder = model.encoder
        self.backbone_name, self.num_queries = encoder.backbone_name, encoder.num_queries
        self.hidden_dim, self.annotation_downsample = encoder.hidden_dim, encoder.annotation_downsample
        self.trainable_modules = model.trainable_modules


def _as_recorded_path(value: str | None) -> str | None:
    """A weights argument as a checkpoint should remember it: existing files absolute, names as given."""
    if value is None or not Path(value).exists():
        return value
    return str(Path(value).resolve())


def _device(config: TrainConfig) -> torch.device:
    name = config.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("device: cuda requested but no CUDA device is available")
    return distributed.process_device(name)


def _amp_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    if not config.amp:
        return None
    if device.type != "cuda":
        raise InputError("amp: mixed precision is for CUDA only; this run is on the CPU")
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
