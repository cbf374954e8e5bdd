"""``vrpsam video`` end to end with the tiny random model, a frame folder or a video file, and user errors."""

import json

import numpy as np
import pytest
from PIL import Image

from cli_support import error_of

from vrpsam.cli.main import main
from vrpsam.io import video as io_video
from vrpsam.io.exports import davis_palette, save_palette_png

SIZE = (48, 64)


pytestmark = pytest.mark.usefixtures("one_tiny_model")


def moving_square(i):
    mask = np.zeros(SIZE, np.uint8)
    mask[10:26, 5 + 6 * i : 21 + 6 * i] = 1
    return mask


@pytest.fixture
def sequence(tmp_path):
    """6 JPEG frames of a red square moving right, with DAVIS palette ground truth."""
    frames, gt = tmp_path / "frames", tmp_path / "gt"
    frames.mkdir()
    gt.mkdir()
    rng = np.random.default_rng(1)
    images = []
    for i in range(6):
        image = rng.integers(0, 80, (*SIZE, 3), dtype=np.uint8)
        image[moving_square(i) == 1] = (220, 30, 30)
        Image.fromarray(image).save(frames / f"{i:05d}.jpg")
        save_palette_png(moving_square(i), gt / f"{i:05d}.png")
        images.append(image)
    return frames, gt, images


def run_ok(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured


@pytest.mark.parametrize("method", ["learned", "training-free"])
def test_frame_folder_end_to_end_with_scores(sequence, tmp_path, capsys, method):
    frames, gt, _ = sequence
    out = tmp_path / "out"
    captured = run_ok(["video", "--frames", str(frames), "--mask", str(gt / "00000.png"), "--ground-truth", str(gt),
                       "--out", str(out), "--model", "tiny-random", "--method", method, "--quiet"], capsys)
    assert f"segmented 6 frame(s) of {frames} from frame 0 (00000), {method}" in captured.out
    overlay = "overlay" + io_video.overlay_suffix()
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{i:05d}.png" for i in range(6)] + [overlay, "scores.json"])
    for i in range(6):
        png = Image.open(out / f"{i:05d}.png")
        assert png.mode == "P" and png.size == (SIZE[1], SIZE[0])
        assert np.array_equal(np.asarray(png.getpalette()[:6]).reshape(2, 3), davis_palette(2))
        assert set(np.unique(np.asarray(png)).tolist()) <= {0, 1}
    scores = json.loads((out / "scores.json").read_text())
    assert [f["frame"] for f in scores["per_frame"]] == ["00001", "00002", "00003", "00004"]
    for frame in scores["per_frame"]:  # the written masks are the ones scored
        predicted = np.asarray(Image.open(out / f"{frame['frame']}.png")) == 1
        truth = moving_square(int(frame["frame"])) == 1
        union = (predicted | truth).sum()
        assert frame["J"] == pytest.approx((predicted & truth).sum() / union if union else 1.0)
    j, f = scores["J"]["mean"], scores["F"]["mean"]
    assert scores["J&F"] == pytest.approx((j + f) / 2)
    lines = captured.out.splitlines()
    assert lines[-3].split() == ["mean", f"{j:.3f}", f"{f:.3f}", f"{(j + f) / 2:.3f}"]
    assert lines[-4].split() == ["J", "F", "J&F"]


def test_video_file_end_to_end(sequence, tmp_path, capsys):
    pytest.importorskip("av")
    _, _, images = sequence
    clip = tmp_path / "clip.mp4"
    with io_video.video_writer(clip, SIZE, fps=12) as writer:
        for image in images:
            writer.write(image)
    out = tmp_path / "out"
    captured = run_ok(["video", "--frames", str(clip), "--reference-frame", "2", "--points", "30,17",
                       "--out", str(out), "--model", "tiny-random", "--quiet"], capsys)
    assert "from frame 2 (00002)" in captured.out and "J&F" not in captured.out
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{i:05d}.png" for i in range(6)] + ["overlay.mp4"])
    assert Image.open(out / "00005.png").size == (SIZE[1], SIZE[0])
    with io_video.open_frames(out / "overlay.mp4") as overlay:
        assert len(overlay) == 6 and overlay.fps == 12 and overlay.size == SIZE


CASES = {
    "missing folder": (["--frames", "{tmp}/nowhere", "--mask", "{gt}/00000.png"], "no such frame folder or video file"),
    "reference out of range": (["--reference-frame", "6", "--mask", "{gt}/00000.png"], "reference frame 6: out of range"),
    "reference not a number": (["--reference-frame", "first", "--mask", "{gt}/00000.png"], "expected a frame number"),
    "empty mask": (["--mask", "{tmp}/empty.png"], "has no foreground pixel"),
    "bad points": (["--points", "10;20"], "points"),
    "point outside": (["--points", "500,10"], "outside the image"),
    "no annotation": ([], "one of the arguments --mask --points --box --scribble is required"),
    "two annotations": (["--mask", "{gt}/00000.png", "--box", "1,1,5,5"], "not allowed with argument"),
    "ground truth mismatch": (["--mask", "{gt}/00000.png", "--ground-truth", "{tmp}/wrong_gt"], "names no frame"),
    "video without PyAV": (["--frames", "{tmp}/clip.mp4", "--points", "5,5"], "pip install 'vrpsam[video]'"),
    "unknown model": (["--mask", "{gt}/00000.png", "--model", "giant-vrp"], "neither a known model"),
    "bad fps": (["--mask", "{gt}/00000.png", "--fps", "0"], "positive number"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_user_errors_are_one_line_exit_2_and_write_nothing(case, sequence, tmp_path, capsys, monkeypatch):
    frames, gt, _ = sequence
    Image.fromarray(np.zeros(SIZE, np.uint8)).save(tmp_path / "empty.png")
    (tmp_path / "wrong_gt").mkdir()
    save_palette_png(moving_square(1), tmp_path / "wrong_gt" / "frame_1.png")
    (tmp_path / "clip.mp4").write_bytes(b"\0" * 32)
    monkeypatch.setattr(io_video, "has_pyav", lambda: False)
    args, message = CASES[case]
    argv = [part.format(tmp=tmp_path, gt=gt) for part in args]
    if "--frames" not in argv:
        argv = ["--frames", str(frames), *argv]
    if "--model" not in argv:
        argv += ["--model", "tiny-random"]
    out = tmp_path / "out"
    err = error_of(["video", *argv, "--out", str(out), "--quiet"], capsys)
    assert message in err
    assert not out.exists()


def test_existing_outputs_need_overwrite(sequence, tmp_path, capsys):
    frames, gt, _ = sequence
    out = tmp_path / "out"
    argv = ["video", "--frames", str(frames), "--box", "5,10,21,26", "--out", str(out), "--model", "tiny-random",
            "--quiet", "--no-overlay"]
    run_ok(argv, capsys)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(before) == [f"{i:05d}.png" for i in range(6)]
    err = error_of(argv, capsys)
    assert "--overwrite" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    run_ok(argv + ["--overwrite"], capsys)
