"""``vrpsam app``: a local web page to annotate a reference and segment targets (``pip install 'vrpsam[app]'``).

    vrpsam app --model NAME_OR_CHECKPOINT [--host 127.0.0.1] [--port 7860] [--device cpu]
               [--max-upload-mb 20] [--max-pixels 25e6]
    vrpsam app --method training-free --sam vit_b [--sam-checkpoint PATH_OR_NAME] ...

The model flags are those of ``vrpsam segment``. The model is built once, before the server starts;
results live in a temporary folder that is removed when the app stops (Ctrl-C or SIGTERM), once the
requests in progress have replied (a second Ctrl-C stops at once).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from ..errors import InputError
from .model_options import add_model_arguments, build_predictor, choose_method


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    server = parser.add_argument_group("server")
    server.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: reachable from this computer only)")
    server.add_argument("--port", type=int, default=7860, help="port to listen on (0: any free port)")
    server.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps...")
    server.add_argument("--max-upload-mb", type=float, default=20, metavar="MB", help="largest request (all images together)")
    server.add_argument("--max-pixels", type=float, default=25e6, metavar="N", help="largest image, in pixels (width x height)")


def _check(args: argparse.Namespace) -> str:
    """The method (learned / training-free), once every flag is known to be usable; nothing heavy yet."""
    if not 0 <= args.port <= 65535:
        raise InputError(f"--port: expected 0..65535, got {args.port}")
    if not args.max_upload_mb > 0:
        raise InputError(f"--max-upload-mb: expected a positive number, got {args.max_upload_mb:g}")
    if not args.max_pixels >= 1:
        raise InputError(f"--max-pixels: expected a positive number, got {args.max_pixels:g}")
    return choose_method(args)


def _describe(args: argparse.Namespace, method: str) -> str:
    if method == "learned":
        return Path(args.model).name
    return f"training-free SAM {args.sam or args.model or args.sam_checkpoint}"


def _stop(signum, frame) -> None:  # SIGTERM ends the app like Ctrl-C, so its temporary folder is removed
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    method = _check(args)
    try:
        from ..app.server import AppConfig, is_loopback, open_server, url_of
    except ImportError as exc:
        raise InputError(f"vrpsam app needs the optional web dependencies: pip install 'vrpsam[app]' ({exc})") from None

    predictor = build_predictor(args, method)
    name = _describe(args, method)
    config = AppConfig(max_upload_mb=args.max_upload_mb, max_pixels=int(args.max_pixels), model_name=name)
    signal.signal(signal.SIGTERM, _stop)
    stopping = False
    try:
        with open_server(predictor, host=args.host, port=args.port, config=config) as server:
            where = "this computer only" if is_loopback(args.host) else "OTHER MACHINES TOO: anyone who can reach this address"
            print(f"vrpsam app: model {name} on {args.device}; listening on {args.host}, reachable from {where}", flush=True)
            print(f"open {url_of(server)} in a browser (Ctrl-C stops the app)", flush=True)
            server.serve_forever()  # Werkzeug's returns on KeyboardInterrupt (Ctrl-C, or SIGTERM by _stop)
            stopping = True
            if busy := server.app.count:
                print(f"vrpsam app: stopping once the {busy} request(s) in progress have replied "
                      "(Ctrl-C again stops at once)", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        if not stopping:
            raise
        # A second signal while requests finish: a torch thread may still be running, and an interpreter
        # exit under one aborts the process, so leave at once; open_server has removed the folder.
        print("vrpsam app: stopped at once, requests unfinished", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(130)
    print("vrpsam app: stopped", file=sys.stderr)
    return 0
