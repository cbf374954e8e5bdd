"""``vrpsam eval``: few-shot mIoU / FB-IoU of a model on a dataset, optionally on several processes.

Runs the same with ``python -m vrpsam.cli.main eval ...`` and under ``torchrun --nproc_per_node N
-m vrpsam.cli.main eval ...`` (gloo on CPU, NCCL on CUDA); the numbers do not depend on N or on
``--workers``. Only rank 0 prints and writes files.
"""

from __future__ import annotations

import argparse

from ..data import load_episodes, open_source, save_episodes
from ..data.simulate import CONDITIONS
from ..engine import distributed
from ..engine.evaluate import DEFAULT_SEED, RESOLUTIONS, build_episodes, evaluate, evaluation_classes, markdown_table
from ..errors import InputError

DEFAULT_EPISODES = 1000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="NAME_OR_CHECKPOINT",
                        help="a model name (e.g. tiny-random) or a VRP encoder checkpoint file")
    parser.add_argument("--dataset", required=True, metavar="KIND:PATH",
                        help="e.g. pascal:/data/VOCdevkit, coco:/data/COCO, yolo:/data/coco128-seg, fss:/data/FSS-1000")
    parser.add_argument("--split", help="dataset split (default: the kind's evaluation split)")
    parser.add_argument("--fold", type=int, help="evaluate this fold's test classes (default: all classes)")
    parser.add_argument("--num-folds", type=int, default=4, help="number of folds (default 4)")
    parser.add_argument("--annotation", default="mask", choices=CONDITIONS, help="reference annotation (default mask)")
    parser.add_argument("--shots", type=int, help="support images per episode (default 1)")
    parser.add_argument("--episodes", type=int, help=f"number of episodes (default {DEFAULT_EPISODES})")
    parser.add_argument("--seed", type=int, help=f"episode and annotation seed (default {DEFAULT_SEED})")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers per process (default 0)")
    parser.add_argument("--batch-size", type=int, default=1, help="episodes per forward pass (default 1)")
    parser.add_argument("--resolution", default="input", choices=RESOLUTIONS,
                        help="compare at the model input size (paper) or at the original image size")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (each torchrun process takes cuda:LOCAL_RANK)")
    parser.add_argument("--json", metavar="OUT.json", help="write the metrics and settings here")
    parser.add_argument("--index-cache", metavar="DIR", help="keep the dataset's class index here between runs")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    replay = parser.add_mutually_exclusive_group()
    replay.add_argument("--episodes-file", metavar="E.json", help="replay the episodes saved in this file")
    replay.add_argument("--save-episodes", metavar="E.json", help="save the drawn episodes to this file")


def _episode_settings(args: argparse.Namespace, source) -> tuple[list, list[int], int, int]:
    """(episodes, classes, shots, seed): drawn from the arguments, or replayed from --episodes-file."""
    if args.episodes_file is None:
        shots = 1 if args.shots is None else args.shots
        seed = DEFAULT_SEED if args.seed is None else args.seed
        count = DEFAULT_EPISODES if args.episodes is None else args.episodes
        if shots < 1:
            raise InputError(f"--shots: expected >= 1, got {shots}")
        classes = evaluation_classes(source, args.fold, args.num_folds)
        return build_episodes(source, classes, count, seed=seed, shots=shots), classes, shots, seed
    given = [name for name in ("shots", "episodes", "fold") if getattr(args, name) is not None]
    if given:
        raise InputError(f"--{given[0]}: comes from --episodes-file {args.episodes_file}; do not give it too")
    episodes, meta = load_episodes(args.episodes_file)
    if not episodes:
        raise InputError(f"--episodes-file {args.episodes_file}: holds no episodes")
    classes = meta.get("classes") or sorted({e.class_id for e in episodes})
    seed = args.seed if args.seed is not None else meta.get("seed", DEFAULT_SEED)
    args.fold = meta.get("fold")
    args.num_folds = meta.get("num_folds", args.num_folds)
    return episodes, [int(c) for c in classes], len(episodes[0].supports), int(seed)


def run(args: argparse.Namespace) -> int:
    from ..vrp.build import build_model  # the model stack is heavy; import it only when evaluating

    if args.workers < 0 or args.batch_size < 1:
        raise InputError(f"--workers must be >= 0 and --batch-size >= 1 (got {args.workers}, {args.batch_size})")
    source = open_source(args.dataset, split=args.split, index_cache=args.index_cache)
    episodes, classes, shots, seed = _episode_settings(args, source)
    model = build_model(args.model)
    distributed.init_from_env(args.device)
    try:
        if args.save_episodes and distributed.is_main():
            meta = {"dataset": source.name, "fold": args.fold, "num_folds": args.num_folds, "classes": classes,
                    "seed": seed, "shots": shots}
            save_episodes(args.save_episodes, episodes, meta)
        result = evaluate(
            model, source, fold=args.fold, annotation=args.annotation, shots=shots, episodes=len(episodes),
            seed=seed, workers=args.workers, resolution=args.resolution, device=args.device,
            progress=not args.no_progress, batch_size=args.batch_size, num_folds=args.num_folds,
            episode_list=episodes, classes=classes,
        )
        result.settings["model"] = str(args.model)
        if distributed.is_main():
            if args.json:
                result.write_json(args.json)
            print(markdown_table([result]), end="")
            unseen = [name for name, n in result.episodes_per_class.items() if n == 0]
            if unseen:
                print(f"note: {len(unseen)} of {len(result.per_class)} classes drew no episode and count as 0 "
                      f"in the mIoU (official protocol); use more --episodes")
    finally:
        distributed.cleanup()
    return 0
