"""``voicegw`` command line: one sub-command family per package, each registered by its owner."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

# Each module exposes ``register(subparsers)``, adding its sub-commands with ``set_defaults(func=...)``.
COMMAND_MODULES = (
    "gateway.serve_cli",
    "storage.cli",
    "storage.billing_cli",
    "providers.simulators.cli",
    "loadtest.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voicegw", description="Real-time voice gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # numpy's OpenBLAS starts a pool of threads when numpy is imported (by the sub-commands' modules,
    # so this comes first). voicegw makes no BLAS calls: the resampler is its own C. The pool only adds
    # idle threads to every process, the bench's children included (they inherit this environment).
    # The user's own setting wins.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    args = build_parser().parse_args(argv)
    result = args.func(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
