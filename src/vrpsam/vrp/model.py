"""VRP-SAM: a VRP encoder whose prompt tokens drive a frozen, unmodified SAM mask decoder."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..sam.sam import Sam
from .encoder import ReferenceEncoding, TargetFeatures, VRPEncoder
from .preprocess import check_mode


@dataclass
class EncodedShots:
    """A batch of targets with their K-shot references, encoded up to the mask decoder's inputs."""

    features: TargetFeatures  # the targets' frozen backbone features
    references: list[ReferenceEncoding]  # one per shot
    prompts: torch.Tensor  # (B, K·Q, 256): each shot's prompt tokens, concatenated
    embeddings: torch.Tensor  # (B, 256, h, w): the targets' SAM image embeddings
    size: int  # S, the side of the targets' square input


class VRPSAM(nn.Module):
    """The VRP encoder plus any ``sam_model_registry`` model, kept frozen.

    The prompt tokens are SAM's *sparse* embeddings, the dense embedding is ``no_mask_embed``, and
    the decoder runs with ``multimask_output=False`` (§2.6 of the official-code notes). SAM's own
    modules are never changed: loading any official SAM checkpoint keeps working.

    Two options exist for models trained from scratch around a small SAM (``lite``); the defaults
    give the official model:

    * ``trainable_sam``: dotted names of SAM submodules that train with the VRP encoder (e.g.
      ``"image_encoder.neck"``, ``"mask_decoder"``); the rest of SAM stays frozen.
    * ``prior``: a module mapping target features and reference encodings to prior mask logits
      (B, 1, h, w) on the feature grid (:class:`vrpsam.vrp.proto.PrototypePrior`). The decoder then
      gets it as SAM's dense *mask* prompt (instead of ``no_mask_embed``) and adds it to its output
      logits (a shortcut: an untrained decoder starts from the prior's decision).
    """

    def __init__(
        self,
        sam: Sam,
        encoder: VRPEncoder,
        *,
        preprocessing: str = "official",
        input_size: int = 512,
        trainable_sam: Sequence[str] = (),
        prior: nn.Module | None = None,
    ) -> None:
        super().__init__()
        check_mode(preprocessing)
        self.sam = sam
        self.encoder = encoder
        self.preprocessing = preprocessing
        self.input_size = input_size
        self.trainable_sam = tuple(trainable_sam)
        self.prior = prior
        self.sam.requires_grad_(False)
        for name in self.trainable_sam:
            self._sam_part(name).requires_grad_(True)
        self.sam.eval()

    def _sam_part(self, name: str) -> nn.Module:
        try:
            return self.sam.get_submodule(name)
        except AttributeError:
            raise InputError(f"trainable_sam: SAM has no submodule {name!r}") from None

    def train(self, mode: bool = True) -> "VRPSAM":
        # SAM stays in eval whatever the caller does; only the VRP encoder (and the parts named in
        # ``trainable_sam``) train.
        super().train(mode)
        self.sam.eval()
        for name in self.trainable_sam:
            self._sam_part(name).train(mode)
        return self

    def trainable_modules(self) -> nn.ModuleDict:
        """Everything that trains, as one module sharing the parameters. Without ``trainable_sam`` and
        ``prior`` it is the VRP encoder's (official key names); SAM parts sit under ``sam.<dotted
        name>``, the prior under ``prior``."""
        parts = dict(self.encoder.trainable_modules().items())
        if self.trainable_sam:
            parts["sam"] = _submodule_tree(self.sam, self.trainable_sam)
        if self.prior is not None:
            parts["prior"] = self.prior
        return nn.ModuleDict(parts)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.trainable_modules().parameters())

    @property
    def _image_encoder_trains(self) -> bool:
        return any(name == "image_encoder" or name.startswith("image_encoder.") for name in self.trainable_sam)

    @property
    def sam_size(self) -> int:
        return self.sam.image_encoder.img_size

    def sam_input(self, target: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) normalised target -> (B, 3, 1024, 1024) for SAM, the official way (bilinear, corners aligned)."""
        return F.interpolate(target, size=(self.sam_size, self.sam_size), mode="bilinear", align_corners=True)

    def embed(self, sam_image: torch.Tensor) -> torch.Tensor:
        """(B, 3, 1024, 1024) normalised -> SAM image embeddings (B, 256, 64, 64).

        Without gradient unless part of the image encoder trains (``trainable_sam``)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and self._image_encoder_trains):
            return self.sam.image_encoder(sam_image)

    def prior_logits(self, target: TargetFeatures, references: Sequence[ReferenceEncoding]) -> torch.Tensor | None:
        """The ``prior`` module's logits (B, 1, h, w) for encoded targets and references; None without one."""
        return None if self.prior is None else self.prior(target, references)

    def decode(
        self, embeddings: torch.Tensor, prompts: torch.Tensor, prior: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings (B, 256, h, w), prompts (B, Q, 256) and optional prior logits (B, 1, h', w') ->
        low-res logits (B, 1, 4h, 4w), IoU (B, 1). See the class docstring for the prior."""
        prompt_encoder = self.sam.prompt_encoder
        b, _, h, w = embeddings.shape
        if prior is None:
            dense = prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(b, -1, h, w)
        else:
            prior = F.interpolate(prior, size=prompt_encoder.mask_input_size, mode="bilinear", align_corners=False)
            dense = prompt_encoder.mask_downscaling(prior)
        low_res, iou = self.sam.mask_decoder(
            image_embeddings=embeddings,
            image_pe=prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=prompts,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        if prior is not None:
            low_res = low_res + F.interpolate(prior, size=low_res.shape[-2:], mode="bilinear", align_corners=False)
        return low_res, iou

    def forward(
        self,
        target: torch.Tensor,
        reference: torch.Tensor,
        annotation: torch.Tensor,
        sam_image: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (B, 1, S, S) over the target's square input.

        ``target``/``reference``: (B, 3, S, S) ImageNet-normalised; ``annotation``: (B, S, S) map of the
        reference. ``sam_image`` (B, 3, 1024, 1024), SAM-normalised, defaults to the official rule (the
        target upsampled); the ``standard`` predictor passes the padded full-resolution image instead.
        """
        return self.forward_shots(target, reference[:, None], annotation[:, None], sam_image)

    def forward_shots(
        self,
        target: torch.Tensor,
        references: torch.Tensor,
        annotations: torch.Tensor,
        sam_image: torch.Tensor | None = None,
        embeddings: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """K-shot :meth:`forward`: references (B, K, 3, S, S), annotations (B, K, S, S) -> logits (B, 1, S, S).

        Each shot's prompt tokens are concatenated (official ``predict_mask_nshot``). ``embeddings``
        (B, 256, h, w): precomputed SAM embeddings of the target (else computed here).
        """
        return self.decode_shots(self.encode_shots(target, references, annotations, sam_image, embeddings))

    def encode_shots(
        self,
        target: torch.Tensor,
        references: torch.Tensor,
        annotations: torch.Tensor,
        sam_image: torch.Tensor | None = None,
        embeddings: torch.Tensor | None = None,
    ) -> EncodedShots:
        """The part of :meth:`forward_shots` before the mask decoder (arguments as there)."""
        encoder = self.encoder
        features = encoder.encode_target(target)
        encoded = [encoder.encode_reference(references[:, k], annotations[:, k]) for k in range(references.shape[1])]
        prompts = torch.cat([encoder.prompts(features, reference) for reference in encoded], dim=1)
        if embeddings is None:
            embeddings = self.embed(self.sam_input(target) if sam_image is None else sam_image)
        return EncodedShots(features, encoded, prompts, embeddings, target.shape[-1])

    def decode_shots(self, encoded: EncodedShots) -> torch.Tensor:
        """The rest of :meth:`forward_shots`: prior, mask decoder, upsampling -> logits (B, 1, S, S).

        Cheap next to :meth:`encode_shots`, so an encoding can be decoded under several prior settings."""
        prior = self.prior_logits(encoded.features, encoded.references)
        low_res, _ = self.decode(encoded.embeddings, encoded.prompts, prior)
        return self.upsample(low_res, encoded.size)

    def upsample(self, low_res: torch.Tensor, size: int) -> torch.Tensor:
        """(B, 1, 4h, 4w) low-res logits -> (B, 1, size, size); corners aligned in ``official`` mode, as there."""
        official = self.preprocessing == "official"
        return F.interpolate(low_res, size=(size, size), mode="bilinear", align_corners=official)


def _submodule_tree(root: nn.Module, names: Sequence[str]) -> nn.Module:
    """A module holding ``root``'s submodules ``names`` (dotted) at the same paths, sharing them."""
    tree = nn.Module()
    for name in names:
        node, *path, leaf = [tree, *name.split(".")]
        for part in path:
            if not hasattr(node, part):
                node.add_module(part, nn.Module())
            node = getattr(node, part)
        node.add_module(leaf, root.get_submodule(name))
    return tree
