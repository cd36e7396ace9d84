"""IPython magics: ``%embed``, ``%%embed``, ``%embed_info`` and ``%embed_serve`` (notebook layer).

Magics block on a future with a timeout (never ``asyncio.run`` or a nested loop). User mistakes
become ``UsageError`` (a one-line message, no traceback).
"""

from __future__ import annotations

import argparse
import os
import shlex
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np
from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class

from . import api
from .embeddings import Embeddings
from .errors import EmbedError
from .settings import MLXEmbed
from .transport import TRANSPORT_ENV
from .worker import EmbedResult


class _Parser(argparse.ArgumentParser):
    """argparse that reports mistakes as UsageError instead of exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")

    def exit(self, status: int = 0, message: str | None = None) -> None:  # type: ignore[override]
        raise UsageError(message or f"{self.prog}: invalid arguments")


def _line_parser() -> _Parser:
    p = _Parser(prog="%embed", add_help=False)
    p.add_argument("-i", "--input", dest="var", help="name of an iterable of strings")
    p.add_argument("-o", "--output", dest="name", help="store the Embeddings under this name")
    _common(p)
    p.add_argument("text", nargs="*")
    return p


def _cell_parser() -> _Parser:
    p = _Parser(prog="%%embed", add_help=False)
    p.add_argument("name", nargs="?", help="store the Embeddings under this name")
    _common(p)
    return p


def _common(p: _Parser) -> None:
    p.add_argument("--model", "-m", help="model name (default: the configured default)")
    p.add_argument("--dimensions", "-d", type=int, help="keep the first D values")
    p.add_argument("--prefix", "-p", default="", help="text put before every input")


def _texts_from(value: Any, name: str) -> list[str]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise UsageError(f"{name} must be an iterable of strings (list, tuple, array, Series)")
    texts = value.tolist() if isinstance(value, np.ndarray) else list(value)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise UsageError(f"{name}[{i}] is a {type(text).__name__}, not a string")
    return texts


@magics_class
class EmbedMagics(Magics):
    """The ``%embed`` family of magics."""

    def __init__(self, shell: Any, settings: MLXEmbed) -> None:
        super().__init__(shell)
        self.settings = settings
        self._server: Any = None

    # -- plumbing ---------------------------------------------------------------------

    def _sync(self) -> None:
        """Apply settings changed with %config since the last magic."""
        mode = self.settings.transport or os.environ.get(TRANSPORT_ENV) or "auto"
        previous = getattr(self, "_mode", None)
        # The API picks its own transport from the environment; only an explicit setting, or
        # a change since the last magic, overrides it.
        if previous != mode and (previous is not None or self.settings.transport is not None):
            try:
                api.set_transport(mode)
            except EmbedError as exc:
                raise UsageError(str(exc)) from None
        self._mode = mode
        transport = api.get_transport()
        if transport.kind == "local":
            wanted = self.settings.engine_config()
            if api.get_worker().config != wanted:
                api.configure(wanted)

    def _run(self, texts: Sequence[str], model: str | None, dims: int | None) -> EmbedResult:
        transport = api.get_transport()
        future: Future[EmbedResult] = transport.submit(texts, model=model, dimensions=dims)
        try:
            return future.result(timeout=transport.timeout)
        except EmbedError as exc:
            raise UsageError(exc.message) from None
        except TimeoutError:
            future.cancel()
            raise UsageError(
                f"no answer from the embedding worker in {transport.timeout}s"
            ) from None
        except KeyboardInterrupt:
            future.cancel()
            raise

    def _embed(self, texts: Sequence[str], args: argparse.Namespace) -> Embeddings:
        self._sync()
        if args.dimensions is not None and args.dimensions < 1:
            raise UsageError("--dimensions must be a positive integer")
        inputs = [args.prefix + t for t in texts] if args.prefix else list(texts)
        result = self._run(inputs, args.model, args.dimensions)
        return Embeddings(list(texts), result.vectors, result.model)

    # -- magics -----------------------------------------------------------------------

    @line_cell_magic
    def embed(self, line: str, cell: str | None = None) -> Any:
        """Embed text.

        ``%embed TEXT`` returns the vector of TEXT (numpy, shape ``(d,)``).

        ``%embed -i VAR [-o NAME] [--model M] [--dimensions D] [--prefix P]`` embeds the
        strings of the iterable VAR in chunks with a progress bar and returns (or stores as
        NAME) an ``Embeddings``; interrupting stores nothing.

        ``%%embed [NAME] [--model M] [--dimensions D] [--prefix P]`` embeds each non-blank
        line of the cell and stores the ``Embeddings`` as NAME (or returns it).
        """
        if cell is not None:
            args = _cell_parser().parse_args(shlex.split(line))
            if args.name is not None and not args.name.isidentifier():
                raise UsageError(f"%%embed: {args.name!r} is not a valid variable name")
            texts = [t.strip() for t in cell.splitlines() if t.strip()]
            if not texts:
                raise UsageError("%%embed: the cell has no text; write one text per line")
            result = self._embed(texts, args)
            if args.name is None:
                return result
            self.shell.user_ns[args.name] = result
            return None
        if not line.strip().startswith("-"):
            text = line.strip()
            if not text:
                raise UsageError("%embed needs a text, e.g. %embed The quick brown fox")
            return self._embed([text], _line_parser().parse_args([])).vectors[0]
        args = _line_parser().parse_args(shlex.split(line))
        if args.var is None:
            text = " ".join(args.text)
            if not text:
                raise UsageError("%embed needs a text or -i VARIABLE")
            return self._embed([text], args).vectors[0]
        if args.text:
            raise UsageError("%embed -i takes a variable, not a text as well")
        return self._embed_collection(args)

    def _embed_collection(self, args: argparse.Namespace) -> Embeddings | None:
        if args.var not in self.shell.user_ns:
            raise UsageError(f"%embed -i: no variable named {args.var!r}")
        if args.name is not None and not args.name.isidentifier():
            raise UsageError(f"%embed -o: {args.name!r} is not a valid variable name")
        texts = _texts_from(self.shell.user_ns[args.var], args.var)
        if not texts:
            raise UsageError(f"%embed -i: {args.var} is empty")
        self._sync()
        from tqdm.auto import tqdm

        step = max(1, self.settings.chunk_size)
        parts: list[np.ndarray] = []
        model = ""
        with tqdm(total=len(texts), desc="embedding", unit="text") as bar:
            try:
                for start in range(0, len(texts), step):
                    chunk = texts[start : start + step]
                    inputs = [args.prefix + t for t in chunk] if args.prefix else chunk
                    result = self._run(inputs, args.model, args.dimensions)
                    parts.append(result.vectors)
                    model = result.model
                    bar.update(len(chunk))
            except KeyboardInterrupt:
                done = sum(len(p) for p in parts)
                print(f"Interrupted after {done} of {len(texts)} texts; nothing was stored.")
                raise
        embeddings = Embeddings(texts, np.concatenate(parts), model)
        if args.name is None:
            return embeddings
        self.shell.user_ns[args.name] = embeddings
        return None

    @line_magic
    def embed_info(self, line: str = "") -> None:
        """Show the transport (server or local), server URL, model, BLAS and queue."""
        self._sync()
        try:
            info = api.info()
        except EmbedError as exc:
            raise UsageError(exc.message) from None
        blas = info.get("blas") or {}
        rows = [
            ("transport", info.get("transport")),
            ("server", info.get("server_url", "(this kernel's own worker)")),
            ("default model", info.get("default_model")),
            ("loaded models", ", ".join(info.get("loaded_models") or []) or "(none yet)"),
            ("device", info.get("device", "?")),
            ("BLAS", f"{blas.get('name', '?')}" + ("" if blas.get("fast", True) else " (SLOW)")),
            ("queue", f"{info.get('queue_depth', 0)} waiting of {info.get('queue_size', '?')}"),
            ("served", f"{info.get('requests', 0)} requests, {info.get('tokens', 0)} tokens"),
            ("version", info.get("version")),
        ]
        width = max(len(k) for k, _ in rows)
        print("\n".join(f"{k:<{width}}  {v}" for k, v in rows))

    @line_magic
    def embed_serve(self, line: str = "") -> None:
        """Serve this kernel's worker over HTTP (OpenAI-compatible, loopback, token required).

        ``%embed_serve [--port P] [--token T]``; ``%embed_serve --stop`` stops it.
        """
        p = _Parser(prog="%embed_serve", add_help=False)
        p.add_argument("--port", type=int, default=8000)
        p.add_argument("--token")
        p.add_argument("--stop", action="store_true")
        args = p.parse_args(shlex.split(line))
        if args.stop:
            if self._server is None:
                raise UsageError("%embed_serve: no server is running in this kernel")
            self._server.stop_soon()
            self._server = None
            print("stopped")
            return
        self._sync()
        transport = api.get_transport()
        if transport.kind == "server":
            url = transport.info()["server_url"].rstrip("/") + "/v1"
            print(
                "This kernel already uses its Jupyter server's endpoint; other programs can "
                f"call it too:\n\n{_snippet(url, 'the Jupyter server token')}"
            )
            return
        if self._server is not None:
            raise UsageError(f"%embed_serve: already serving at {self._server.url}")
        from .server import KernelServer

        self._server = KernelServer.start(api.get_worker(), port=args.port, token=args.token)
        os.environ["JUPYTER_MLX_EMBED_TOKEN"] = self._server.token
        print(
            f"Serving at {self._server.url} (loopback only). The API key is in this kernel's "
            "JUPYTER_MLX_EMBED_TOKEN environment variable (not printed, so it stays out of "
            f"the saved notebook).\n\n{_snippet(self._server.url, 'that token')}"
        )


def _snippet(url: str, key: str) -> str:
    return (
        "from openai import OpenAI\n"
        f'client = OpenAI(base_url="{url}", api_key=...)  # api_key: {key}\n'
        'client.embeddings.create(model="all-MiniLM-L6-v2", input=["hello"])'
    )


def load(shell: Any) -> None:
    """Register the magics and the ``MLXEmbed`` settings with an IPython shell."""
    settings = MLXEmbed(parent=shell)
    if settings not in shell.configurables:
        shell.configurables.append(settings)
    shell.register_magics(EmbedMagics(shell, settings))
