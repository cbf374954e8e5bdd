import numpy as np
import pytest
from PIL import Image

from vrpsam.errors import InputError
from vrpsam.io.images import load_image, load_mask


def test_load_image_rgb_from_grey_and_rgba(tmp_path):
    Image.fromarray(np.full((5, 7), 100, np.uint8)).save(tmp_path / "grey.png")
    Image.fromarray(np.zeros((5, 7, 4), np.uint8)).save(tmp_path / "rgba.png")
    for name in ("grey.png", "rgba.png"):
        image = load_image(tmp_path / name)
        assert image.shape == (5, 7, 3) and image.dtype == np.uint8
    assert (load_image(tmp_path / "grey.png") == 100).all()


def test_load_image_applies_exif_orientation(tmp_path):
    pixels = np.zeros((4, 6, 3), np.uint8)
    pixels[0, 0] = 255  # marks the top-left corner of the stored pixels
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=100)
    shown = load_image(tmp_path / "rotated.jpg")
    assert shown.shape == (6, 4, 3)
    assert shown[0, -1].mean() > 128  # the stored top-left is now top-right


def test_load_mask_keeps_palette_indices(tmp_path):
    values = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    mask = Image.fromarray(values, mode="P")
    mask.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (253 * 3))
    mask.save(tmp_path / "palette.png")
    assert np.array_equal(load_mask(tmp_path / "palette.png"), values)


def test_load_mask_rejects_colour(tmp_path):
    rgb = np.zeros((3, 3, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)
    Image.fromarray(rgb).save(tmp_path / "colour.png")
    with pytest.raises(InputError, match="colour.png"):
        load_mask(tmp_path / "colour.png")


def test_missing_and_unreadable_files_name_the_path(tmp_path):
    with pytest.raises(InputError, match="no such image file"):
        load_image(tmp_path / "nope.jpg")
    (tmp_path / "junk.jpg").write_bytes(b"not an image")
    with pytest.raises(InputError, match="junk.jpg: not a readable image"):
        load_image(tmp_path / "junk.jpg")


def test_real_photo_and_mask_agree_in_size(shared):
    image = load_image(shared("assets/data/persam-examples/cat_00.jpg"))
    mask = load_mask(shared("assets/data/persam-examples/cat_00.png"))
    assert image.shape[:2] == mask.shape
    assert set(np.unique(mask)) <= {0, 1}
