"""``vrpsam segment`` end to end on real photos with the tiny random model, and every user error."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from cli_support import error_of

from vrpsam.cli.main import main
from vrpsam.io.exports import rle_to_mask
from vrpsam.vrp.build import LITE_WEIGHTS

EXAMPLES = "assets/data/persam-examples"


pytestmark = pytest.mark.usefixtures("one_tiny_model")


@pytest.fixture
def cats(shared):
    return {name: str(shared(f"{EXAMPLES}/{name}")) for name in
            ("cat_00.jpg", "cat_00.png", "cat_01.jpg", "cat_02.jpg", "duck_toy_00.jpg", "duck_toy_00.png")}


def run_ok(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured


def test_end_to_end_masks_overlays_and_coco(cats, tmp_path, capsys, monkeypatch, tiny_model):
    out = tmp_path / "out"
    encoded = []
    original = tiny_model.encoder.encode_reference
    monkeypatch.setattr(tiny_model.encoder, "encode_reference", lambda *a, **k: encoded.append(1) or original(*a, **k))
    captured = run_ok(["segment", "--reference", cats["cat_00.jpg"], "--mask", cats["cat_00.png"],
                       "--targets", cats["cat_01.jpg"], cats["cat_02.jpg"], "--out", str(out),
                       "--model", "tiny-random", "--quiet"], capsys)
    assert "segmented 2 target(s)" in captured.out
    assert len(encoded) == 1  # the reference is encoded once, not per target
    results = json.loads((out / "results.coco.json").read_text())
    assert isinstance(results, list) and len(results) == 2
    for image_id, (name, entry) in enumerate(zip(("cat_01", "cat_02"), results), start=1):
        with Image.open(cats[f"{name}.jpg"]) as target:
            width, height = target.size
        png = Image.open(out / f"{name}.png")
        assert png.mode == "L" and png.size == (width, height)
        pixels = np.asarray(png)
        assert set(np.unique(pixels).tolist()) <= {0, 255}
        assert {"image_id", "file_name", "category_id", "segmentation", "score", "height", "width"} <= set(entry)
        assert entry["image_id"] == image_id and isinstance(entry["image_id"], int)
        assert entry["file_name"] == cats[f"{name}.jpg"] and isinstance(entry["category_id"], int)
        assert isinstance(entry["score"], float) and (entry["height"], entry["width"]) == (height, width)
        assert entry["segmentation"]["size"] == [height, width] and isinstance(entry["segmentation"]["counts"], str)
        np.testing.assert_array_equal(rle_to_mask(entry["segmentation"]), pixels == 255)
        assert Image.open(out / "overlays" / f"{name}.jpg").size == (width, height)


def test_overwrite_is_needed_to_replace_outputs(cats, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["segment", "--reference", cats["cat_00.jpg"], "--box", "300,200,1000,1200",
            "--targets", cats["cat_01.jpg"], "--out", str(out), "--model", "tiny-random", "--quiet", "--no-overlays"]
    run_ok(argv, capsys)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(before) == ["cat_01.png", "results.coco.json"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    run_ok(argv + ["--overwrite"], capsys)


def test_k_shot_mixed_annotations_and_training_free(cats, tmp_path, capsys):
    shots = ["--reference", cats["cat_00.jpg"], "--mask", cats["cat_00.png"],
             "--reference", cats["duck_toy_00.jpg"], "--points", "640,640;700,600"]
    for method in ("learned", "training-free"):
        out = tmp_path / method
        captured = run_ok(["segment", *shots, "--targets", cats["cat_01.jpg"], "--out", str(out),
                           "--model", "tiny-random", "--method", method, "--quiet"], capsys)
        assert f"2 reference(s), {method}" in captured.out
        assert Image.open(out / "cat_01.png").size == Image.open(cats["cat_01.jpg"]).size


def bad_inputs(tmp_path):
    """Files that are wrong in one way each."""
    (tmp_path / "notes.jpg").write_text("not an image")
    Image.fromarray(np.zeros((1282, 1282), np.uint8)).save(tmp_path / "empty.png")
    Image.fromarray(np.ones((100, 100), np.uint8)).save(tmp_path / "small.png")
    (tmp_path / "vrp.pt").write_bytes(b"\x80not really")
    return tmp_path


NO_MODEL = "<no --model>"
CASES = {
    "missing reference": (["--reference", "{tmp}/nope.jpg", "--mask", "{ref_mask}"], "nope.jpg: no such image"),
    "unreadable reference": (["--reference", "{tmp}/notes.jpg", "--mask", "{ref_mask}"], "not a readable image"),
    "malformed points": (["--reference", "{ref}", "--points", "10;20"], "points"),
    "box outside image": (["--reference", "{ref}", "--box", "0,0,5000,10"], "outside the image"),
    "empty mask": (["--reference", "{ref}", "--mask", "{tmp}/empty.png"], "no foreground"),
    "mask size": (["--reference", "{ref}", "--mask", "{tmp}/small.png"], "differs from the image size"),
    "two kinds": (["--reference", "{ref}", "--mask", "{ref_mask}", "--points", "5,5"], "several annotation kinds"),
    "count mismatch": (["--reference", "{ref}", "--reference", "{ref}", "--mask", "{ref_mask}"],
                       "2 --reference but 1 annotation ("),
    "no annotation": (["--reference", "{ref}"], "needs an annotation"),
    "no reference": (["--mask", "{ref_mask}"], "--reference: required"),
    "missing target": (["--reference", "{ref}", "--mask", "{ref_mask}", "--targets", "{tmp}/gone.jpg"],
                       "no such target"),
    "unreadable target": (["--reference", "{ref}", "--mask", "{ref_mask}", "--targets", "{tmp}/notes.jpg"],
                          "not a readable image"),
    "unknown model": (["--reference", "{ref}", "--mask", "{ref_mask}", "--model", "giant-vrp"],
                      "neither a known model"),
    "default model offline": (["--reference", "{ref}", "--mask", "{ref_mask}", NO_MODEL],
                              "mobilenet_v2_1.0_224_quant.tflite"),
    "weights offline (training-free)": (["--reference", "{ref}", "--mask", "{ref_mask}", NO_MODEL,
                                         "--method", "training-free", "--sam", "vit_b"], "VRPSAM_OFFLINE"),
    "weights offline (learned)": (["--reference", "{ref}", "--mask", "{ref_mask}", "--model", "{tmp}/vrp.pt"],
                                  "sam_vit_h"),
    "unknown sam": (["--reference", "{ref}", "--mask", "{ref_mask}", NO_MODEL,
                     "--method", "training-free", "--sam", "vit_x"], "unknown SAM model"),
    "bad device": (["--reference", "{ref}", "--mask", "{ref_mask}", "--device", "toaster"], "--device"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_user_errors_are_one_line_exit_2_and_write_nothing(case, cats, tmp_path, capsys):
    bad_inputs(tmp_path)
    argv, message = CASES[case]
    values = {"tmp": str(tmp_path), "ref": cats["cat_00.jpg"], "ref_mask": cats["cat_00.png"]}
    argv = [part.format(**values) for part in argv]
    if "--targets" not in argv:
        argv += ["--targets", cats["cat_01.jpg"]]
    if NO_MODEL in argv:
        argv.remove(NO_MODEL)
    elif "--model" not in argv:
        argv += ["--model", "tiny-random"]
    out = tmp_path / "out"
    err = error_of(["segment", *argv, "--out", str(out), "--quiet"], capsys)
    assert message in err
    assert not out.exists()


def test_clashing_target_names_are_refused_before_writing(cats, tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    Image.open(cats["cat_01.jpg"]).resize((40, 40)).save(other / "cat_01.png")
    out = tmp_path / "out"
    err = error_of(["segment", "--reference", cats["cat_00.jpg"], "--mask", cats["cat_00.png"], "--targets",
                    cats["cat_01.jpg"], str(other), "--out", str(out), "--model", "tiny-random"], capsys)
    assert "would both write" in err and not out.exists()


def test_torchrun_shards_targets_and_rank_0_merges(cats, tmp_path):
    out = tmp_path / "out"
    targets = [cats["cat_01.jpg"], cats["cat_02.jpg"], cats["duck_toy_00.jpg"]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "vrpsam.cli.main", "segment", "--reference", cats["cat_00.jpg"], "--mask", cats["cat_00.png"],
               "--targets", *targets, "--out", str(out), "--model", "tiny-random", "--quiet"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "rank 0 of 2" in done.stdout
    results = json.loads((out / "results.coco.json").read_text())
    assert [r["image_id"] for r in results] == [1, 2, 3]
    assert [r["file_name"] for r in results] == targets
    for target, entry in zip(targets, results):
        stem = os.path.splitext(os.path.basename(target))[0]
        pixels = np.asarray(Image.open(out / f"{stem}.png"))
        np.testing.assert_array_equal(rle_to_mask(entry["segmentation"]), pixels == 255)


def test_readme_main_job_segments_the_cat_with_the_default_model(cats, shared, tmp_path, monkeypatch, capsys):
    # The README's quick start, on a fresh clone: no --model means lite, MobileNetV2 from VRPSAM_WEIGHTS.
    monkeypatch.setenv("VRPSAM_WEIGHTS", str(shared("assets/weights/mobilenet_v2")))
    out = tmp_path / "out"
    code = main(["segment", "--reference", cats["cat_00.jpg"], "--mask", cats["cat_00.png"],
                 "--targets", cats["cat_01.jpg"], "--out", str(out), "--quiet"])
    assert code == 0
    assert "note: using lite, a small demo model" in capsys.readouterr().err
    predicted = np.asarray(Image.open(out / "cat_01.png")) > 0
    truth = np.asarray(Image.open(shared(f"{EXAMPLES}/cat_01.png"))) > 0
    assert (predicted & truth).sum() / (predicted | truth).sum() >= 0.6


def test_a_lite_checkpoint_file_is_built_as_recorded(cats, tmp_path, capsys, monkeypatch, shared):
    # A checkpoint `vrpsam train --model-preset lite` writes records its build: it needs no SAM weights,
    # and segments exactly as the packaged `lite` does from the same file.
    monkeypatch.setenv("VRPSAM_WEIGHTS", str(shared("assets/weights/mobilenet_v2")))
    checkpoint = shutil.copy(LITE_WEIGHTS, tmp_path / "mine.safetensors")
    argv = ["segment", "--reference", cats["cat_00.jpg"], "--mask", cats["cat_00.png"], "--targets", cats["cat_01.jpg"],
            "--quiet", "--no-overlays"]
    run_ok(argv + ["--out", str(tmp_path / "file"), "--model", str(checkpoint)], capsys)
    run_ok(argv + ["--out", str(tmp_path / "named"), "--model", "lite"], capsys)
    assert (tmp_path / "file" / "cat_01.png").read_bytes() == (tmp_path / "named" / "cat_01.png").read_bytes()
    err = error_of(argv + ["--out", str(tmp_path / "x"), "--model", str(checkpoint), "--sam", "vit_b"], capsys)
    assert "lite checkpoint" in err and "--sam" in err
