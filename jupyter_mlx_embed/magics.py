"""IPython magics: ``%embed``, ``%%embed``, ``%embed_images``, ``%embed_info`` and
``%embed_serve`` (notebook layer).

Magics block on a future with a timeout (never ``asyncio.run`` or a nested loop). User mistakes
become ``UsageError`` (a one-line message, no traceback).
"""

from __future__ import annotations

import argparse
import difflib
import io
import keyword
import os
import re
import shlex
import tokenize
from collections.abc import Sequence
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class

from . import api, envvars
from .config import DEFAULT_PORT
from .embeddings import Embeddings, embed_picture_collection
from .errors import EmbedError
from .options import EmbedOptions
from .progress import progress_bar
from .results import EmbedResult
from .settings import MLXEmbed
from .validation import labels_of, to_texts

#: How an option starts (``-o``, ``--skip-invalid``), as against a negative number.
_OPTION_START = re.compile(r"--?[A-Za-z]")


class _Parser(argparse.ArgumentParser):
    """argparse that reports mistakes as UsageError instead of exiting, and options it does
    not know as such (with the closest one it knows), never as abbreviations of others."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog=prog, add_help=False, allow_abbrev=False)

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: None = None
    ) -> argparse.Namespace:
        parsed, extra = self.parse_known_args(args)
        unknown = next((word for word in extra if _OPTION_START.match(word)), None)
        if unknown is not None:
            option = unknown.split("=", 1)[0]
            known = [name for action in self._actions for name in action.option_strings]
            close = difflib.get_close_matches(option, known, n=1)
            hint = f"; did you mean {close[0]}?" if close else f" (options: {', '.join(known)})"
            raise UsageError(f"{self.prog}: unknown option {option}{hint}")
        if extra:
            self.error(f"unrecognized arguments: {' '.join(extra)}")
        return parsed

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")

    def exit(self, status: int = 0, message: str | None = None) -> None:  # type: ignore[override]
        raise UsageError(message or f"{self.prog}: invalid arguments")


def _line_parser() -> _Parser:
    p = _Parser("%embed")
    p.add_argument("-i", "--input", dest="var", help="an expression giving strings")
    p.add_argument("-o", "--output", dest="name", help="store the Embeddings under this name")
    p.add_argument("--skip-invalid", action="store_true", help="leave out items that are not texts")
    _common(p)
    p.add_argument("text", nargs="*")
    return p


def _images_parser() -> _Parser:
    p = _Parser("%embed_images")
    p.add_argument("-i", "--input", dest="var", help="a folder, a glob, or an expression")
    p.add_argument("-o", "--output", dest="name", help="store the Embeddings under this name")
    p.add_argument(
        "--skip-invalid", action="store_true", help="leave out items that are not pictures"
    )
    p.add_argument("--model", "-m", help="an image-text model (default: the configured default)")
    p.add_argument("--dimensions", "-d", type=int, help="keep the first D values")
    return p


_INPUT = re.compile(r"(?:^|\s)(?:-i|--input)(?:\s+|=)(?=\S)")


def _split_line(line: str, *, paths: bool = False) -> list[str]:
    """The words of a ``%embed`` line; the expression after ``-i`` is kept as written
    (``df["text"]``, ``df.text.str.lower()``) instead of being split like shell words.
    ``paths``: ``-i`` may be a folder or glob typed as is (see :func:`_expression_end`)."""
    found = _INPUT.search(line)
    if found is None:
        return _words(line)
    rest = line[found.end() :]
    end = _expression_end(rest, paths=paths)
    expression = [rest[:end].strip()] if end else []  # none: argparse says -i needs one
    return [*_words(line[: found.start()]), "-i", *expression, *_words(rest[end:])]


def _words(line: str) -> list[str]:
    """``line`` split as a shell splits it; an unclosed quote is a ``UsageError``."""
    try:
        return shlex.split(line)
    except ValueError as exc:  # shlex's "No closing quotation"
        raise UsageError(f"{exc}: {line.strip()}") from None


#: Token types that end an operand, so that a ``-`` after them is not a sign (FSTRING_END:
#: Python 3.12 and later).
_OPERAND_TYPES = {
    number
    for number, name in tokenize.tok_name.items()
    if name in ("NAME", "NUMBER", "STRING", "FSTRING_END")
}
#: Keywords after which a ``-`` is a sign (``x if c else -y``).
_OPERATOR_WORDS = set(keyword.kwlist) - {"True", "False", "None"}


def _expression_end(text: str, *, paths: bool = False) -> int:
    """Where the Python expression at the start of ``text`` ends: before the first option,
    a ``-x`` or ``--word`` after a space, outside brackets and strings, where an operand has
    just ended (so ``x --skip-invalid`` and ``x --bogus`` end before ``--``, while
    ``df["a -- b"]`` and ``a - -b`` are whole). With ``paths``, ``/`` and ``*`` end an operand
    too, as folders and globs typed as is do (``photos/ -o pics``, ``photos/* -o pics``)."""
    ends = (")", "]", "}", "/", "*") if paths else (")", "]", "}")
    depth, operand, previous_end = 0, True, 0  # an option first leaves the expression empty
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            start = token.start[1]
            spaced = start == 0 or start > previous_end
            if depth == 0 and operand and spaced and _OPTION_START.match(text, start):
                return start
            if token.type == tokenize.OP and token.string in ("(", "[", "{"):
                depth += 1
            elif token.type == tokenize.OP and token.string in (")", "]", "}"):
                depth -= 1
            operand = token.string in ends or (
                token.type in _OPERAND_TYPES and token.string not in _OPERATOR_WORDS
            )
            previous_end = token.end[1]
    except (tokenize.TokenError, SyntaxError):  # unclosed: evaluating it says what is wrong
        pass
    return len(text)


#: ``x = %embed Some question?``: IPython would read the final ``?`` as a help request.
_QUESTION = re.compile(r"^(\s*)((?:[\w.\[\]'\",\s]+?)\s*=\s*)?%embed\s+(.*\?)\s*$")


def keep_question_marks(lines: list[str]) -> list[str]:
    """An IPython input transformer: ``%embed`` lines keep their trailing question marks
    (they are questions to embed, not help requests)."""
    out = []
    for line in lines:
        match = _QUESTION.match(line.rstrip("\n"))
        if match is None:
            out.append(line)
            continue
        indent, target, text = match.groups()
        call = f"get_ipython().run_line_magic('embed', {text!r})"
        out.append(f"{indent}{target or ''}{call}\n")
    return out


def _cell_parser() -> _Parser:
    p = _Parser("%%embed")
    p.add_argument("name", nargs="?", help="store the Embeddings under this name")
    _common(p)
    return p


def _common(p: _Parser) -> None:
    p.add_argument("--model", "-m", help="model name (default: the configured default)")
    p.add_argument("--dimensions", "-d", type=int, help="keep the first D values")
    p.add_argument("--prefix", "-p", default="", help="text put before every input")
    p.add_argument(
        "--prompt-name", help="one of the model's prompts (e.g. query), put before every input"
    )


@magics_class
class EmbedMagics(Magics):
    """The ``%embed`` family of magics."""

    def __init__(self, shell: Any, settings: MLXEmbed) -> None:
        super().__init__(shell)
        self.settings = settings
        self._server: Any = None

    @property
    def _namespace(self) -> dict[str, Any]:
        """The user's namespace (magics are registered with a shell, so it exists)."""
        assert self.shell is not None
        namespace: dict[str, Any] = self.shell.user_ns
        return namespace

    # -- plumbing ---------------------------------------------------------------------

    def _sync(self) -> None:
        """Apply settings changed with %config since the last magic."""
        try:  # %config checks each value as it is set; JUPYTER_MLX_EMBED_* variables only here
            serving, engine = self.settings.serving_config(), self.settings.engine_config()
        except ValueError as exc:
            raise UsageError(f"invalid setting: {exc}") from None
        api.set_serving_config(serving)
        try:
            transport = api.get_transport()
        except EmbedError as exc:
            raise UsageError(str(exc)) from None
        if transport.kind == "local" and api.get_worker().config != engine:
            api.configure(engine)

    def _run(
        self, texts: Sequence[str], args: argparse.Namespace, progress: Any = None
    ) -> EmbedResult:
        """Embed ``texts`` (with the prefix) in chunks; errors become ``UsageError``."""
        inputs = [args.prefix + t for t in texts] if args.prefix else list(texts)
        parts = []
        try:
            options = EmbedOptions(args.model, args.dimensions, args.prompt_name)
            parts_of = api.embed_chunks(inputs, options)
            for part in parts_of:
                parts.append(part)
                if progress is not None:
                    progress.update(len(part.vectors))
        except EmbedError as exc:
            raise UsageError(exc.message) from None
        except TimeoutError:
            timeout = api.serving_config().request_timeout
            raise UsageError(f"no answer from the embedding worker in {timeout}s") from None
        return EmbedResult.concatenate(parts)

    def _embed(self, texts: Sequence[str], args: argparse.Namespace) -> Embeddings:
        self._sync()
        result = self._run(texts, args)
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
            args = _cell_parser().parse_args(_words(line))
            if args.name is not None and not args.name.isidentifier():
                raise UsageError(f"%%embed: {args.name!r} is not a valid variable name")
            texts = [t.strip() for t in cell.splitlines() if t.strip()]
            if not texts:
                raise UsageError("%%embed: the cell has no text; write one text per line")
            result = self._embed(texts, args)
            if args.name is None:
                return result
            self._namespace[args.name] = result
            return None
        if not line.strip().startswith("-"):
            text = line.strip()
            if not text:
                raise UsageError("%embed needs a text, e.g. %embed The quick brown fox")
            return self._embed([text], _line_parser().parse_args([])).vectors[0]
        args = _line_parser().parse_args(_split_line(line))
        if args.var is None:
            text = " ".join(args.text)
            if not text:
                raise UsageError("%embed needs a text or -i VARIABLE")
            return self._embed([text], args).vectors[0]
        if args.text:
            raise UsageError("%embed -i takes a variable, not a text as well")
        return self._embed_collection(args)

    def _embed_collection(self, args: argparse.Namespace) -> Embeddings | None:
        expression = args.var
        if expression.isidentifier() and expression not in self._namespace:
            raise UsageError(f"%embed -i: no variable named {expression!r}")
        if args.name is not None and not args.name.isidentifier():
            raise UsageError(f"%embed -o: {args.name!r} is not a valid variable name")
        try:
            value = self.shell.ev(expression) if self.shell is not None else None
        except Exception as exc:  # noqa: BLE001 - the user's expression: reported, not raised
            raise UsageError(
                f"%embed -i: {expression} failed: {type(exc).__name__}: {exc}"
            ) from None
        try:
            texts, skipped = to_texts(value, name=expression, skip_invalid=args.skip_invalid)
        except EmbedError as exc:
            raise UsageError(f"%embed -i: {exc.message}") from None
        if not texts and skipped:
            every = (
                "the one item" if len(skipped) == 1 else f"every one of the {len(skipped)} items"
            )
            raise UsageError(
                f"%embed -i: {every} of {expression} is missing, blank or not a string: "
                "nothing to embed"
            )
        if not texts:
            raise UsageError(f"%embed -i: {expression} has no texts")
        # Index labels (a Series') of the rows kept, and labels (else positions) skipped.
        labels, bad = labels_of(value), set(skipped)
        index = None if labels is None else [x for i, x in enumerate(labels) if i not in bad]
        skipped = [i if labels is None else labels[i] for i in skipped]
        self._sync()
        with progress_bar(len(texts), desc="embedding", unit="text") as bar:
            try:
                result = self._run(texts, args, progress=bar)
            except KeyboardInterrupt:
                # A fresh exception, without the waiting threads' frames: IPython then shows
                # a few lines ending with this message rather than a page of traceback.
                raise KeyboardInterrupt(
                    f"Interrupted after {bar.n} of {len(texts)} texts; nothing was stored "
                    "(vectors already computed are cached: running the cell again resumes)."
                ) from None
        if skipped:
            items = "item that is not a text" if len(skipped) == 1 else "items that are not texts"
            print(f"Skipped {len(skipped)} {items} (see .skipped).")
        embeddings = Embeddings(texts, result.vectors, result.model, index=index, skipped=skipped)
        if args.name is None:
            return embeddings
        self._namespace[args.name] = embeddings
        return None

    @line_magic
    def embed_images(self, line: str) -> Embeddings | None:
        """Embed pictures with an image-text model (SigLIP).

        ``%embed_images -i SOURCE [-o NAME] [--model M] [--dimensions D] [--skip-invalid]``:
        SOURCE is a folder (its pictures), a glob (``photos/*.jpg``, ``**`` recursive) or an
        expression giving file paths, bytes, PIL images or uint8 arrays (a DataFrame column
        of paths, say). Embeds them in chunks with a progress bar; returns (or stores as
        NAME) an ``Embeddings`` whose ``search("a red car")`` finds pictures by text.
        ``--skip-invalid`` leaves out items that are not pictures or cannot be decoded
        (listed in ``.skipped``) instead of failing.
        """
        args = _images_parser().parse_args(_split_line(line, paths=True))
        if args.var is None:
            raise UsageError("%embed_images needs -i FOLDER, -i 'GLOB' or -i EXPRESSION")
        if args.name is not None and not args.name.isidentifier():
            raise UsageError(f"%embed_images -o: {args.name!r} is not a valid variable name")
        items, labels = self._picture_items(args.var)
        self._sync()
        options = EmbedOptions(args.model, args.dimensions)
        with progress_bar(len(items), desc="embedding", unit="picture") as bar:
            try:
                embeddings = embed_picture_collection(
                    items, options, skip_invalid=args.skip_invalid, labels=labels, progress=bar
                )
            except KeyboardInterrupt:
                raise KeyboardInterrupt(
                    f"Interrupted after {bar.n} of {len(items)} pictures; nothing was stored "
                    "(vectors already computed are cached: running the cell again resumes)."
                ) from None
            except EmbedError as exc:
                raise UsageError(f"%embed_images -i: {exc.message}") from None
            except TimeoutError:
                timeout = api.serving_config().request_timeout
                raise UsageError(f"no answer from the embedding worker in {timeout}s") from None
        if embeddings.skipped:
            count = len(embeddings.skipped)
            noun = "item that is not a readable picture" if count == 1 else "items"
            print(f"Skipped {count} {noun} (see .skipped).")
        if args.name is None:
            return embeddings
        self._namespace[args.name] = embeddings
        return None

    def _picture_items(self, expression: str) -> tuple[list[Any], list[Any] | None]:
        """The pictures ``-i`` names (a folder or glob as typed, or an expression's value)
        and their labels (a Series' index), paths made absolute."""
        try:
            value = self.shell.ev(expression) if self.shell is not None else expression
        except (SyntaxError, NameError):
            value = expression.strip().strip("'\"")  # a folder or glob typed as is
        except Exception as exc:  # noqa: BLE001 - the user's expression: reported, not raised
            raise UsageError(
                f"%embed_images -i: {expression} failed: {type(exc).__name__}: {exc}"
            ) from None
        from .images import as_pictures, picture_files

        if isinstance(value, (str, os.PathLike)):
            files = picture_files(os.fspath(value))
            if not files:
                raise UsageError(f"%embed_images -i: no picture files match {os.fspath(value)!r}")
            return files, None
        try:
            items, single = as_pictures(value)
        except TypeError:
            raise UsageError(
                f"%embed_images -i: {expression} is a {type(value).__name__}, not pictures"
            ) from None
        return items, None if single else labels_of(value)

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
        lines = [f"{k:<{width}}  {v}" for k, v in rows]
        lines += [f"{card['id']}: {_describe_model(card)}" for card in info.get("models") or []]
        print("\n".join(lines))

    @line_magic
    def embed_serve(self, line: str = "") -> None:
        """Serve this kernel's worker over HTTP (OpenAI-compatible, loopback, token required).

        ``%embed_serve [--port P] [--token T]`` (``--port 0`` picks a free port);
        ``%embed_serve --stop`` stops it. The server runs on a thread with its own event loop,
        so later cells of this kernel can call it, and it answers while a cell runs.
        """
        p = _Parser("%embed_serve")
        p.add_argument("--port", type=int, default=DEFAULT_PORT)
        p.add_argument("--token")
        p.add_argument("--stop", action="store_true")
        args = p.parse_args(_words(line))
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
                f"call it too:\n\n{_snippet(url, '...  # the Jupyter server token')}"
            )
            return
        if self._server is not None:
            raise UsageError(f"%embed_serve: already serving at {self._server.url}")
        from .standalone import ThreadedServer

        try:
            self._server = ThreadedServer.start(
                api.get_worker(),
                port=args.port,
                token=args.token,
                config=self.settings.serving_config(),
            )
        except OSError as exc:
            raise UsageError(f"%embed_serve: cannot listen on port {args.port}: {exc}") from None
        os.environ[envvars.TOKEN] = self._server.token
        os.environ[envvars.URL] = self._server.url  # for jupyter_mlx_embed.openai_client()
        key = f'os.environ["{envvars.TOKEN}"]'
        print(
            f"Serving at {self._server.url} (loopback only). The API key is in this kernel's "
            f"{envvars.TOKEN} environment variable (not printed, so it stays out of "
            f"the saved notebook).\n\n{_snippet(self._server.url, key)}"
        )


def _describe_model(card: dict[str, Any]) -> str:
    """One line of a loaded model's metadata (``GET /v1/models/{id}``)."""
    quantization = card.get("quantization")
    parts = [
        "reranker" if card.get("task") == "rerank" else f"{card.get('dimensions')} dimensions",
        f"max {card.get('max_input_tokens')} tokens",
        f"{card.get('pooling')} pooling",
        f"{quantization['bits']}-bit" if quantization else "float weights",
    ]
    size = card.get("image_size")
    if size:
        parts.insert(0, f"texts and {size[0]} x {size[1]} pictures")
    prompts = card.get("prompts") or {}
    if prompts:
        default = card.get("default_prompt_name")
        names = [f"{name}{' (default)' if name == default else ''}" for name in prompts]
        parts.append("prompts: " + ", ".join(names))
    return ", ".join(parts)


def _snippet(url: str, api_key: str) -> str:
    """Code calling ``url`` with the official client (``api_key``: a Python expression)."""
    return (
        "import os\n"
        "from openai import OpenAI\n"
        f'client = OpenAI(base_url="{url}", api_key={api_key})\n'
        'client.embeddings.create(model="all-MiniLM-L6-v2", input=["hello"])'
    )


def load(shell: Any) -> None:
    """Register the magics and the ``MLXEmbed`` settings with an IPython shell."""
    settings = MLXEmbed(parent=shell)
    if keep_question_marks not in shell.input_transformers_cleanup:
        shell.input_transformers_cleanup.append(keep_question_marks)
    if settings not in shell.configurables:
        shell.configurables.append(settings)
    shell.register_magics(EmbedMagics(shell, settings))
