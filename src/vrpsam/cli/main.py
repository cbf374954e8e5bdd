"""The ``vrpsam`` command: one sub-command per job, user errors as one line and exit status 2."""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from .. import __version__
from ..errors import VrpsamError
from . import app as app_cmd
from . import eval as eval_cmd
from . import segment as segment_cmd
from . import train as train_cmd
from . import video as video_cmd
from . import weights as weights_cmd

# name -> (add_arguments, run, one-line help)
COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int], str]] = {
    "weights": (weights_cmd.add_arguments, weights_cmd.run, "list known checkpoints, where they are, verify a file"),
    "segment": (segment_cmd.add_arguments, segment_cmd.run, "segment what annotated references show, in many target images"),
    "eval": (eval_cmd.add_arguments, eval_cmd.run, "few-shot mIoU / FB-IoU of a model on a dataset (torchrun-ready)"),
    "app": (app_cmd.add_arguments, app_cmd.run, "a local web page: draw on a reference, segment targets, download masks"),
    "train": (train_cmd.add_arguments, train_cmd.run, "meta-train the VRP encoder on episodes (torchrun-ready, exact resume)"),
    "video": (video_cmd.add_arguments, video_cmd.run, "segment every frame of a video from one annotated frame; DAVIS masks, J&F"),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's default prints usage twice over; one line is enough
        raise VrpsamError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vrpsam", description="VRP-SAM: segment what a reference image shows, in other images.")
    parser.add_argument("--version", action="version", version=f"vrpsam {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, (add_arguments, _, help_text) in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command][1](args)
    except VrpsamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
