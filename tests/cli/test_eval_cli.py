"""``vrpsam eval``: identical JSON for any number of workers and torchrun processes, replay, one-line errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from vrpsam.cli.main import main

COCO128 = "assets/data/coco128-seg"
CONTRACT = ["--model", "tiny-random", "--episodes", "8", "--no-progress"]


def run_eval(*args) -> int:
    return main(["eval", *map(str, args)])


def load(path):
    return json.loads(path.read_text())


@pytest.fixture
def folder_dataset(tmp_path):
    """Four classes of three 24x20 images each, binary masks, in the ``folder`` layout."""
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for name in ("ant", "bee", "cat", "dog"):
        (root / name / "images").mkdir(parents=True)
        (root / name / "masks").mkdir()
        for j in range(3):
            image = rng.integers(0, 255, size=(24, 20, 3), dtype=np.uint8)
            mask = np.zeros((24, 20), np.uint8)
            mask[4 + j : 14 + j, 3:12] = 255
            Image.fromarray(image).save(root / name / "images" / f"{j}.png")
            Image.fromarray(mask).save(root / name / "masks" / f"{j}.png")
    return root


def test_workers_0_and_2_give_identical_json(shared, tmp_path, capsys):
    dataset = f"yolo:{shared(COCO128)}"
    for workers in (0, 2):
        assert run_eval(*CONTRACT, "--dataset", dataset, "--workers", workers, "--json", tmp_path / f"w{workers}.json") == 0
    out = capsys.readouterr().out
    assert out.count("| mIoU |") == 2 and out.startswith("| Model | Dataset |")
    first, second = load(tmp_path / "w0.json"), load(tmp_path / "w2.json")
    assert first == second
    assert first["episodes"] == 8 and sum(first["episodes_per_class"].values()) == 8
    assert {"miou", "fbiou", "per_class", "settings"} <= set(first)
    assert first["settings"]["model"] == "tiny-random" and first["settings"]["fold"] is None


def test_torchrun_two_gloo_processes_match_one_process(shared, tmp_path):
    dataset = f"yolo:{shared(COCO128)}"
    assert run_eval(*CONTRACT, "--dataset", dataset, "--json", tmp_path / "one.json") == 0
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "vrpsam.cli.main", "eval", *CONTRACT, "--dataset", dataset, "--json", str(tmp_path / "two.json")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("| mIoU |") == 1  # rank 0 only
    assert load(tmp_path / "two.json") == load(tmp_path / "one.json")


def test_saved_episodes_replay_exactly(folder_dataset, tmp_path, capsys):
    dataset = f"folder:{folder_dataset}"
    common = ["--model", "tiny-random", "--dataset", dataset, "--no-progress"]
    assert run_eval(*common, "--fold", 1, "--episodes", 3, "--seed", 7, "--save-episodes", tmp_path / "e.json",
                    "--json", tmp_path / "a.json") == 0
    assert run_eval(*common, "--episodes-file", tmp_path / "e.json", "--json", tmp_path / "b.json") == 0
    first, replayed = load(tmp_path / "a.json"), load(tmp_path / "b.json")
    assert first == replayed
    assert first["settings"]["classes"] == [2] and first["settings"]["fold"] == 1 and first["settings"]["seed"] == 7
    assert set(first["per_class"]) == {"bee"}
    assert len(load(tmp_path / "e.json")["episodes"]) == 3
    capsys.readouterr()


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--dataset", "nope:/x"], "unknown kind"),
        (["--dataset", "folder:/does/not/exist"], "/does/not/exist"),
        (["--model", "no-such-model"], "no-such-model"),
        (["--episodes", "0"], "episodes"),
        (["--resolution", "full"], "resolution"),
        (["--episodes-file", "/no/such/episodes.json"], "/no/such/episodes.json"),
        (["--workers", "-1"], "--workers"),
    ],
)
def test_bad_inputs_are_one_line_exit_2(folder_dataset, capsys, args, fragment):
    base = {"--model": "tiny-random", "--dataset": f"folder:{folder_dataset}"}
    for key, value in zip(args[::2], args[1::2]):
        base[key] = value
    argv = [item for pair in base.items() for item in pair]
    assert run_eval(*argv, "--no-progress") == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1 and fragment in err


def test_replay_refuses_conflicting_options(folder_dataset, tmp_path, capsys):
    common = ["--model", "tiny-random", "--dataset", f"folder:{folder_dataset}", "--no-progress"]
    assert run_eval(*common, "--episodes", 2, "--save-episodes", tmp_path / "e.json") == 0
    capsys.readouterr()
    assert run_eval(*common, "--episodes-file", tmp_path / "e.json", "--shots", 2) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--shots" in err
