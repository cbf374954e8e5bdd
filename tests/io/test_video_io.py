"""Frames from folders and video files; the MP4 and Motion-JPEG AVI overlay writers."""

import io
import struct

import numpy as np
import pytest
from PIL import Image

from vrpsam.errors import InputError
from vrpsam.io import video
from vrpsam.io.video import open_frames, video_writer


def colour_frames(count, size=(24, 32)):
    """Frames with a distinct flat colour each, so a decoded frame can be told apart from its neighbours."""
    return [np.full((*size, 3), (40 * i % 256, 255 - 30 * i, 100), np.uint8) for i in range(count)]


def test_folder_frames_natural_order_and_names(tmp_path):
    for i, name in enumerate(["f10.png", "f2.jpg", "f1.png", "notes.txt"]):
        if name.endswith(".txt"):
            (tmp_path / name).write_text("not a frame")
        else:
            Image.fromarray(colour_frames(3)[i % 3]).save(tmp_path / name)
    frames = open_frames(tmp_path)
    assert frames.names == ("f1", "f2", "f10") and len(frames) == 3
    assert frames.size == (24, 32) and frames.fps is None and not frames.is_video
    assert frames.input_files == tuple(tmp_path / n for n in ("f1.png", "f2.jpg", "f10.png"))
    np.testing.assert_array_equal(frames.read(0), colour_frames(3)[2])


@pytest.mark.parametrize("case, message", [
    ("missing", "no such frame folder or video file"),
    ("empty folder", "folder has no frames"),
    ("sizes differ", "differs from"),
    ("same stem", "have the same name"),
    ("single image", "a single image"),
    ("text file", "not a video file"),
])
def test_frame_input_errors(case, message, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    target = folder
    if case == "missing":
        target = tmp_path / "gone"
    elif case == "sizes differ":
        Image.new("RGB", (32, 24)).save(folder / "a.png")
        Image.new("RGB", (30, 24)).save(folder / "b.png")
    elif case == "same stem":
        Image.new("RGB", (32, 24)).save(folder / "a.png")
        Image.new("RGB", (32, 24)).save(folder / "a.jpg")
    elif case == "single image":
        target = folder / "a.png"
        Image.new("RGB", (32, 24)).save(target)
    elif case == "text file":
        target = folder / "clip.txt"
        target.write_text("hello")
    with pytest.raises(InputError, match=message):
        open_frames(target)


def read_avi(data):
    """Header counts and the JPEG frames of an AVI, walking its RIFF chunks (LISTs recursively)."""
    assert data[:4] == b"RIFF" and data[8:12] == b"AVI "
    assert struct.unpack("<I", data[4:8])[0] == len(data) - 8
    info, jpegs = {}, []

    def walk(position, end):
        while position < end:
            tag, size = data[position : position + 4], struct.unpack("<I", data[position + 4 : position + 8])[0]
            body = data[position + 8 : position + 8 + size]
            if tag == b"LIST":
                if body[:4] == b"movi":
                    info["movi"] = position + 8
                walk(position + 12, position + 8 + size)
            elif tag == b"avih":
                fields = struct.unpack("<14I", body)
                info["frames"], info["width"], info["height"] = fields[4], fields[8], fields[9]
            elif tag == b"strh":
                scale, rate = struct.unpack("<II", body[20:28])
                info["fps"], info["length"] = rate / scale, struct.unpack("<I", body[32:36])[0]
            elif tag == b"00dc":
                jpegs.append(body)
            elif tag == b"idx1":
                info["index"] = [struct.unpack("<4sIII", body[i : i + 16]) for i in range(0, size, 16)]
            position += 8 + size + size % 2

    walk(12, len(data))
    return info, jpegs


def test_mjpeg_avi_writer(tmp_path):
    path = tmp_path / "clip.avi"
    frames = colour_frames(5, size=(25, 33))  # odd sizes are fine for Motion-JPEG
    with video_writer(path, (25, 33), fps=12.5) as writer:
        for frame in frames:
            writer.write(frame)
    data = path.read_bytes()
    info, jpegs = read_avi(data)
    index, movi = info.pop("index"), info.pop("movi")
    assert info == {"frames": 5, "width": 33, "height": 25, "fps": 12.5, "length": 5}
    for (tag, flags, offset, size), jpeg in zip(index, jpegs, strict=True):  # offsets count from the movi tag
        assert (tag, flags, size) == (b"00dc", 0x10, len(jpeg))
        assert data[movi + offset : movi + offset + 4] == b"00dc"
        assert data[movi + offset + 8 : movi + offset + 8 + size] == jpeg
    for frame, jpeg in zip(frames, jpegs):
        decoded = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
        assert decoded.shape == (25, 33, 3)
        assert np.abs(decoded.astype(int) - frame).max() <= 8  # JPEG of a flat colour
    assert [p.name for p in tmp_path.iterdir()] == ["clip.avi"]  # no temporary file left


def test_writer_failure_leaves_no_file(tmp_path):
    path = tmp_path / "clip.avi"
    with pytest.raises(InputError, match="expected"):
        with video_writer(path, (8, 8)) as writer:
            writer.write(np.zeros((8, 9, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_without_pyav_video_files_fail_with_the_extra_named(tmp_path, monkeypatch):
    monkeypatch.setattr(video, "has_pyav", lambda: False)
    (tmp_path / "clip.mp4").write_bytes(b"\0" * 64)
    with pytest.raises(InputError, match=r"needs PyAV; install it with pip install 'vrpsam\[video\]'"):
        open_frames(tmp_path / "clip.mp4")
    with pytest.raises(InputError, match=r"vrpsam\[video\]"):
        with video_writer(tmp_path / "out.mp4", (8, 8)):
            pass
    assert video.overlay_suffix() == ".avi"


def test_mp4_round_trip(tmp_path):
    pytest.importorskip("av")
    path = tmp_path / "clip.mp4"
    frames = colour_frames(6, size=(25, 33))  # odd: padded to 26x34 for yuv420p
    with video_writer(path, (25, 33), fps=10) as writer:
        for frame in frames:
            writer.write(frame)
    clip = open_frames(path)
    assert clip.is_video and clip.input_files == (path,)
    assert clip.names == tuple(f"{i:05d}" for i in range(6)) and clip.fps == 10 and clip.size == (26, 34)
    for index in (3, 4, 1):  # forwards, then a backwards jump re-opens the decoder
        decoded = clip.read(index).astype(int)
        assert np.abs(decoded[:25, :33] - frames[index]).mean() < 6
        others = [np.abs(decoded[:25, :33] - f).mean() for i, f in enumerate(frames) if i != index]
        assert min(others) > 10
    clip.close()
    assert video.overlay_suffix() == ".mp4"


def test_unreadable_video_file(tmp_path):
    pytest.importorskip("av")
    (tmp_path / "clip.mp4").write_bytes(b"definitely not a video")
    with pytest.raises(InputError, match="clip.mp4: not a readable video"):
        open_frames(tmp_path / "clip.mp4")
