import numpy as np
import pytest
import torch

from vrpsam.errors import InputError
from vrpsam.io.images import IMAGENET_MEAN, IMAGENET_STD
from vrpsam.vrp.preprocess import (
    Frame,
    check_image,
    logits_to_original,
    longest_side_shape,
    normalised_tensor,
    pad_map,
)


def test_longest_side_shape_rounds_like_sam():
    # 300 wide, 200 high -> 1024 wide, 200 * 1024 / 300 = 682.67 -> 683 high
    assert longest_side_shape(200, 300, 1024) == (683, 1024)
    assert longest_side_shape(512, 512, 512) == (512, 512)


def test_frames_per_mode():
    assert Frame.for_image((200, 300), 512, "official").resized == (512, 512)
    assert Frame.for_image((200, 300), 512, "standard").resized == (341, 512)
    with pytest.raises(InputError, match="preprocessing"):
        Frame.for_image((200, 300), 512, "squash")


def test_normalised_tensor_pads_with_zeros_and_normalises():
    image = np.full((20, 40, 3), 255, dtype=np.uint8)
    frame = Frame.for_image((20, 40), 16, "standard")
    x = normalised_tensor(image, frame)
    assert x.shape == (1, 3, 16, 16)
    expected = [(1.0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]
    assert torch.allclose(x[0, :, :8, :], torch.tensor(expected).view(3, 1, 1).expand(3, 8, 16))
    assert torch.count_nonzero(x[0, :, 8:, :]) == 0


def test_pad_map_checks_shape():
    frame = Frame.for_image((20, 40), 16, "standard")
    m = pad_map(np.ones((8, 16), np.float32), frame)
    assert m.shape == (1, 16, 16) and m.sum() == 8 * 16
    with pytest.raises(InputError, match="expected shape"):
        pad_map(np.ones((16, 16), np.float32), frame)


@pytest.mark.parametrize("bad", [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 4), np.uint8)])
def test_check_image_rejects(bad):
    with pytest.raises(InputError, match="HxWx3 uint8"):
        check_image(bad)


def test_logits_back_to_original_size():
    # A left-half-positive logit map must stay left-half positive at the original size in both modes.
    low = torch.full((1, 1, 8, 8), -5.0)
    low[..., :, :4] = 5.0
    official = logits_to_original(low, Frame.for_image((30, 50), 8, "official"), "official")
    assert official.shape == (1, 1, 30, 50)
    assert (official[0, 0, :, :20] > 0).all() and (official[0, 0, :, 30:] < 0).all()
    # standard: the image occupies the top 8x5 of an 8x8 frame (50 wide, 30 high); the crop drops padding
    standard = logits_to_original(low, Frame.for_image((30, 50), 8, "standard"), "standard")
    assert standard.shape == (1, 1, 30, 50)
    assert (standard[0, 0, :, :20] > 0).all() and (standard[0, 0, :, 30:] < 0).all()
