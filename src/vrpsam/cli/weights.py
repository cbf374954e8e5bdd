"""``vrpsam weights``: the known checkpoints, where each was found or would be downloaded; verify a file."""

from __future__ import annotations

import argparse

from .. import weights


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--verify", metavar="FILE", help="check FILE's size and SHA-256 against the registry")
    parser.add_argument("--name", help="registry name for --verify (default: matched by file name)")


def run(args: argparse.Namespace) -> int:
    if args.verify:
        spec = weights.verify_file(args.verify, args.name)
        print(f"{args.verify}: OK ({spec.name}, {spec.size} bytes, sha256 {spec.sha256})")
        return 0
    rows = weights.describe()
    width = max(len(row["name"]) for row in rows)
    for row in rows:
        where = row["found"] or f"not found; would download to {row['cache_path']}"
        print(f"{row['name']:<{width}}  {row['size'] / 1e6:8.1f} MB  {where}")
        print(f"{'':<{width}}  {row['url']}")
    return 0
