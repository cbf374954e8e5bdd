"""Reading the frames of a video (a folder of images or a video file) and writing an overlay video.

Input, :func:`open_frames`:

- a **folder**: its image files (suffixes in ``IMAGE_SUFFIXES``, subfolders not searched) are the
  frames, in natural order (``f2.jpg`` before ``f10.jpg``; zero-padded DAVIS names sort as usual). A
  frame is named by its file stem. Works with Pillow alone.
- a **video file** (``VIDEO_SUFFIXES``): decoded with PyAV (FFmpeg), the optional ``video`` extra
  (``pip install 'vrpsam[video]'``). Frames are named ``00000``, ``00001``, ... (DAVIS style, wider
  when a video has more than 100000 frames). The file is decoded once up front to count its frames,
  because container frame counts are often missing or wrong. Rotation metadata is not applied.

Every frame must have the size of the first; headers are checked before any pixel is decoded.

Output, :func:`video_writer`, by the file's suffix:

- ``.mp4``: H.264 (``libx264``, yuv420p) through PyAV, which plays almost everywhere. H.264 with
  yuv420p needs even sizes, so an odd width or height is padded by repeating the last column or row.
- ``.avi``: Motion-JPEG in a RIFF AVI, written here with Pillow's JPEG encoder, for installs without
  PyAV. Full colour, streamed to disk (no frame is kept in memory), read by FFmpeg/VLC and most players.

:func:`overlay_suffix` picks ``.mp4`` when PyAV is installed and ``.avi`` otherwise. Writes are atomic
(:func:`vrpsam.io.atomic.atomic_file`): an interrupted run leaves no half-written video.
"""

from __future__ import annotations

import importlib.util
import io
import os
import re
import struct
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Iterator, Protocol

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import InputError
from .atomic import atomic_file
from .images import IMAGE_SUFFIXES, load_image

PathLike = str | os.PathLike

VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".wmv", ".flv")
VIDEO_EXTRA = "pip install 'vrpsam[video]' (PyAV)"
DEFAULT_FPS = Fraction(24)  # DAVIS sequences are 24 fps; a frame folder carries no rate of its own


def has_pyav() -> bool:
    """Whether the optional PyAV package (``av``) can be imported."""
    return importlib.util.find_spec("av") is not None


def _import_av(path: Path, doing: str, otherwise: str):
    if not has_pyav():
        raise InputError(f"{path}: {doing} needs PyAV; install it with {VIDEO_EXTRA}, or {otherwise}")
    import av

    return av


def _natural_key(name: str) -> list:
    """Sort key comparing digit runs as numbers: ``f2`` < ``f10``."""
    return [int(part) if part.isdigit() else part.casefold() for part in re.split(r"(\d+)", name)]


class Frames:
    """The frames of one video: ``names[i]``, ``size`` (H, W), ``fps`` (None for a folder), ``read(i)``.

    ``read`` is cheapest in increasing order: a video file is decoded sequentially and a backwards
    jump starts decoding again from the first frame. Close it (or use ``with``) to free the decoder.
    """

    def __init__(self, source: Path, names: tuple[str, ...], size: tuple[int, int], *,
                 files: tuple[Path, ...] = (), fps: Fraction | None = None) -> None:
        self.source, self.names, self.size, self.files, self.fps = source, names, size, files, fps
        self._decoder = None  # (container, frame iterator, index of the next frame) of a video file

    @property
    def is_video(self) -> bool:
        return not self.files

    @property
    def input_files(self) -> tuple[Path, ...]:
        """The files the frames come from: the frame images, or the video file."""
        return self.files or (self.source,)

    def __len__(self) -> int:
        return len(self.names)

    def read(self, index: int) -> np.ndarray:
        """Frame ``index`` as (H, W, 3) uint8 RGB."""
        if not 0 <= index < len(self):
            raise InputError(f"{self.source}: frame {index} out of range (0..{len(self) - 1})")
        image = load_image(self.files[index]) if self.files else self._decode(index)
        if image.shape[:2] != self.size:
            where = self.files[index] if self.files else f"{self.source} frame {index}"
            raise InputError(f"{where}: frame size {image.shape[1]}x{image.shape[0]} differs from the first "
                             f"frame's {self.size[1]}x{self.size[0]}")
        return image

    def _decode(self, index: int) -> np.ndarray:
        if self._decoder is None or self._decoder[2] > index:
            self.close()
            container = _open_container(self.source)
            self._decoder = (container, _decoded(container, self.source), 0)
        container, frames, position = self._decoder
        for frame in frames:
            position += 1
            if position - 1 == index:
                self._decoder = (container, frames, position)
                return frame.to_ndarray(format="rgb24")
        self.close()
        raise InputError(f"{self.source}: ended before frame {index}; the file changed while being read")

    def close(self) -> None:
        if self._decoder is not None:
            self._decoder[0].close()
            self._decoder = None

    def __enter__(self) -> Frames:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_frames(path: PathLike) -> Frames:
    """The frames of a folder of images or of a video file; see the module docstring."""
    path = Path(os.path.expanduser(str(path)))
    if path.is_dir():
        return _folder_frames(path)
    if not path.is_file():
        raise InputError(f"{path}: no such frame folder or video file")
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return _video_frames(path)
    kind = "a single image" if path.suffix.lower() in IMAGE_SUFFIXES else "not a video file"
    raise InputError(f"{path}: {kind}; pass a folder of frames or a video ({', '.join(VIDEO_SUFFIXES)})")


def _folder_frames(folder: Path) -> Frames:
    files = sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                   key=lambda p: _natural_key(p.name))
    if not files:
        raise InputError(f"{folder}: folder has no frames ({', '.join(IMAGE_SUFFIXES)}; subfolders are not searched)")
    seen: dict[str, Path] = {}
    size = None
    for file in files:
        key = file.stem.casefold()
        if key in seen:
            raise InputError(f"{folder}: frames {seen[key].name} and {file.name} have the same name; keep one")
        seen[key] = file
        try:
            with Image.open(file) as image:
                width, height = image.size
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise InputError(f"{file}: not a readable image ({exc})") from None
        if size is None:
            size = (height, width)
        elif (height, width) != size:
            raise InputError(f"{file}: frame size {width}x{height} differs from {files[0].name}'s {size[1]}x{size[0]}")
    return Frames(folder, tuple(f.stem for f in files), size, files=tuple(files))


def _open_container(path: Path):
    av = _import_av(path, "reading a video file", "pass a folder of frames")
    try:
        container = av.open(str(path), mode="r")
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable video ({exc})") from None
    if not container.streams.video:
        container.close()
        raise InputError(f"{path}: has no video stream")
    return container


def _decoded(container, path: Path) -> Iterator:
    """The container's video frames in order; decoding errors become one-line input errors."""
    import av

    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # frame threads: decoding keeps up with the model on CPU
    try:
        yield from container.decode(stream)
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot decode the video ({exc})") from None


def _video_frames(path: Path) -> Frames:
    container = _open_container(path)
    try:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        count, size = 0, None
        for frame in _decoded(container, path):
            if size is None:
                size = (frame.height, frame.width)
            count += 1
    finally:
        container.close()
    if count == 0:
        raise InputError(f"{path}: the video has no frames")
    width = max(5, len(str(count - 1)))
    fps = Fraction(rate) if rate else None
    return Frames(path, tuple(f"{i:0{width}d}" for i in range(count)), size, fps=fps)


# --- writing -------------------------------------------------------------------------------------

class VideoWriter(Protocol):
    def write(self, frame: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 RGB frame of the writer's size."""


def overlay_suffix() -> str:
    """``.mp4`` (H.264) when PyAV is installed, else ``.avi`` (Motion-JPEG, Pillow only)."""
    return ".mp4" if has_pyav() else ".avi"


def _rate(fps: float | Fraction) -> Fraction:
    rate = Fraction(fps).limit_denominator(100_000)
    if rate <= 0:
        raise InputError(f"fps: expected a positive frame rate, got {fps}")
    return rate


@contextmanager
def video_writer(path: PathLike, size: tuple[int, int], fps: float | Fraction = DEFAULT_FPS) -> Iterator[VideoWriter]:
    """A writer of (H, W) = ``size`` RGB frames to ``path`` (.mp4 or .avi), finished atomically on exit."""
    path = Path(path)
    suffix, rate = path.suffix.lower(), _rate(fps)
    if suffix not in (".mp4", ".avi"):
        raise InputError(f"{path}: unsupported video type {path.suffix!r}; use .mp4 or .avi")
    if suffix == ".mp4":
        _import_av(path, "writing MP4", "write .avi (Motion-JPEG)")
    with atomic_file(path) as handle:
        writer = _Mp4Writer(handle, size, rate) if suffix == ".mp4" else _MjpegAviWriter(handle, size, rate)
        try:
            yield writer
        except BaseException:
            writer.abort()
            raise
        writer.finish()


def _check_frame(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.shape != (*size, 3) or frame.dtype != np.uint8:
        raise InputError(f"video frame: expected ({size[0]}, {size[1]}, 3) uint8, got {frame.shape} {frame.dtype}")
    return frame


class _Mp4Writer:
    """H.264 in MP4 through PyAV, onto an open binary file."""

    def __init__(self, handle: BinaryIO, size: tuple[int, int], rate: Fraction) -> None:
        import av

        self.size = size
        self.container = av.open(handle, mode="w", format="mp4")
        self.stream = self.container.add_stream("libx264", rate=rate)
        self.stream.height, self.stream.width = (s + s % 2 for s in size)
        self.stream.pix_fmt = "yuv420p"
        self.stream.options = {"crf": "20"}  # visually clean tints and outlines at a modest size
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        import av

        frame = _check_frame(frame, self.size)
        if frame.shape[0] % 2 or frame.shape[1] % 2:
            frame = np.pad(frame, ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0)), mode="edge")
        picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        picture.pts = self.frames
        picture.time_base = 1 / self.stream.codec_context.framerate
        self.frames += 1
        self.container.mux(self.stream.encode(picture))

    def finish(self) -> None:
        self.container.mux(self.stream.encode(None))  # drain the encoder's delayed frames
        self.container.close()

    def abort(self) -> None:
        self.container.close()  # the partial file itself is removed by atomic_file


class _MjpegAviWriter:
    """Motion-JPEG frames in a RIFF AVI 1.0 file with an ``idx1`` index; sizes are patched on finish.

    Layout: ``RIFF AVI`` > ``LIST hdrl`` (``avih``, ``LIST strl`` > ``strh``, ``strf``) > ``LIST movi``
    (one ``00dc`` chunk per JPEG frame) > ``idx1`` (offsets from the ``movi`` tag).
    """

    _AVIF_HASINDEX = 0x10
    _AVIIF_KEYFRAME = 0x10
    _LIMIT = 2**32 - 1  # RIFF sizes are 32-bit

    def __init__(self, handle: BinaryIO, size: tuple[int, int], rate: Fraction, quality: int = 90) -> None:
        self.handle, self.size, self.rate, self.quality = handle, size, rate, quality
        self.index: list[tuple[int, int]] = []  # (offset from the movi tag, JPEG size)
        self.largest = 0
        self._write_headers()
        self.movi_tag = handle.tell() - 4

    def _header_fields(self) -> bytes:
        height, width = self.size
        frames, largest = len(self.index), self.largest
        usec = round(1_000_000 / self.rate)
        avih = struct.pack("<14I", usec, largest * int(self.rate + 1), 0, self._AVIF_HASINDEX, frames, 0, 1,
                           largest, width, height, 0, 0, 0, 0)
        strh = struct.pack("<4s4sIHHIIIIIIII4h", b"vids", b"MJPG", 0, 0, 0, 0, self.rate.denominator,
                           self.rate.numerator, 0, frames, largest, 0xFFFFFFFF, 0, 0, 0, width, height)
        strf = struct.pack("<IiiHH4sIiiII", 40, width, height, 1, 24, b"MJPG", width * height * 3, 0, 0, 0, 0)
        strl = b"strl" + _chunk(b"strh", strh) + _chunk(b"strf", strf)
        return b"hdrl" + _chunk(b"avih", avih) + _chunk(b"LIST", strl)

    def _write_headers(self) -> None:
        header = _chunk(b"LIST", self._header_fields())
        self.handle.write(b"RIFF" + struct.pack("<I", 0) + b"AVI " + header + b"LIST" + struct.pack("<I", 0) + b"movi")

    def write(self, frame: np.ndarray) -> None:
        buffer = io.BytesIO()
        Image.fromarray(_check_frame(frame, self.size)).save(buffer, format="JPEG", quality=self.quality)
        data = buffer.getvalue()
        offset = self.handle.tell() - self.movi_tag
        if self.handle.tell() + len(data) + 16 * (len(self.index) + 2) > self._LIMIT:
            raise InputError("overlay video: over 4 GiB as Motion-JPEG AVI; install PyAV for MP4 "
                             f"({VIDEO_EXTRA}) or segment a shorter clip")
        self.handle.write(_chunk(b"00dc", data))
        self.index.append((offset, len(data)))
        self.largest = max(self.largest, len(data))

    def finish(self) -> None:
        handle = self.handle
        movi_end = handle.tell()
        entries = b"".join(struct.pack("<4sIII", b"00dc", self._AVIIF_KEYFRAME, offset, size)
                           for offset, size in self.index)
        handle.write(_chunk(b"idx1", entries))
        end = handle.tell()
        handle.seek(4)
        handle.write(struct.pack("<I", end - 8))
        handle.seek(12)
        handle.write(_chunk(b"LIST", self._header_fields()))  # same length, now with the counts
        handle.seek(self.movi_tag - 4)
        handle.write(struct.pack("<I", movi_end - self.movi_tag))
        handle.seek(end)

    def abort(self) -> None:
        pass  # nothing is held beyond the file, which atomic_file removes


def _chunk(tag: bytes, data: bytes) -> bytes:
    """A RIFF chunk: tag, little-endian size, data, and a pad byte to an even length."""
    return tag + struct.pack("<I", len(data)) + data + (b"\0" if len(data) % 2 else b"")
