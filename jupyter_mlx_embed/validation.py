"""The one set of input rules every path applies (pure: no MLX, no I/O).

The worker's :meth:`~jupyter_mlx_embed.worker.Worker.submit` calls :func:`check_inputs` and
:func:`check_dimensions` for every request, whichever front end it came from; the Python API
and the magics call :func:`to_texts` to turn the user's iterable into a list first. Messages
name the caller's own variable and index (``texts[300]``, not an index inside a chunk).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .errors import InputTypeError, InvalidRequestError, ModelTypeError, elide
from .modelspec import ModelSpec

#: Characters a caller's own ``prompt`` may have: it is put before every input, so its cost
#: is paid once per input; real instructions (e5, bge, Qwen3-Embedding) are a few hundred.
MAX_PROMPT_CHARS = 2048
#: Bad rows of a table that :func:`not_texts_error` names before it says "and N more".
_SHOWN_ROWS = 3


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def to_strings(value: Any, *, name: str = "input") -> list[str]:
    """A list of the strings in ``value``, an iterable such as a list, tuple, numpy array or
    pandas Series (a lone string is not accepted: it is a sequence of characters).

    Raises:
        InputTypeError: ``value`` is not an iterable, or an item is not a string.
    """
    items = _items(value, name)
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise InputTypeError(f"{name}[{i}] {_type_problem(item)}", param="input")
    return items


def _items(value: Any, name: str) -> list[Any]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        kind = "a single string" if isinstance(value, str) else type(value).__name__
        raise InputTypeError(
            f"{name} must be an iterable of strings (list, tuple, array, Series), not {kind}",
            param="input",
        )
    return value.tolist() if hasattr(value, "tolist") else list(value)


def labels_of(value: Any) -> list[Any] | None:
    """The index labels of a pandas Series (or anything with a non-callable ``index``)."""
    index = getattr(value, "index", None)
    if index is None or callable(index):
        return None
    return [label.item() if hasattr(label, "item") else label for label in index]


def to_texts(
    value: Any, *, name: str = "input", skip_invalid: bool = False
) -> tuple[list[str], list[int]]:
    """The texts in ``value`` (see :func:`to_strings`), every one checked before any is
    embedded.

    Args:
        value: An iterable of strings.
        name: What the caller calls ``value``, for messages.
        skip_invalid: Leave out the items that are not texts instead of failing.

    Returns:
        The texts to embed, and the positions in ``value`` that were left out.

    Raises:
        InvalidRequestError: Some items are not texts (``InputTypeError`` when one is not a
            string); the message counts them, names the first few by position (and label,
            for a Series) and says how to fix it.
    """
    items = _items(value, name)
    problems = text_problems(items)
    if skip_invalid or not problems:
        bad = {i for i, _ in problems}
        return [t for i, t in enumerate(items) if i not in bad], sorted(bad)
    labels = labels_of(value)

    def where(i: int) -> str:
        label = "" if labels is None or labels[i] == i else f" (label {labels[i]!r})"
        return f"{name}[{i}]{label}"

    shown = "; ".join(f"{where(i)} {p}" for i, p in problems[:3])
    more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
    kind = InputTypeError if any(not isinstance(items[i], str) for i, _ in problems) else None
    if len(problems) == 1:
        message = shown
    else:
        message = (
            f"{len(problems)} items of {name} are not texts: {shown}{more}. Drop them first "
            "(e.g. series.dropna() and remove blank strings), or skip them "
            "(%embed -i ... --skip-invalid, explore(..., skip_invalid=True))"
        )
    raise (kind or InvalidRequestError)(message, param="input")


def not_texts_error(
    problems: Sequence[tuple[int, str]],
    values: Sequence[Any],
    *,
    column: str,
    error_column: str,
    flag: str,
    first_row: int | None = None,
    quote: Callable[[int], str] | None = None,
) -> InvalidRequestError:
    """The error for rows of a table's ``column`` that are not texts (as :func:`text_problem`
    judges them), for batch jobs: the rows are named by their number, or by their position in
    a batch, and the hint says how to skip them.

    Args:
        problems: (position, reason) of each bad row, positions within ``values``.
        values: The column's values.
        column: The column's name.
        error_column: The column that gets the reasons when rows are skipped.
        flag: The option that skips such rows (``skip_invalid=True``, ``--skip-invalid``).
        first_row: The global number of ``values[0]``; ``None`` when unknown (positions are
            then given within the batch).
        quote: A few other values of the row at a position (`` (id='doc-13')``), to find a
            row that has no global number.

    Returns:
        An ``InvalidRequestError`` (``InputTypeError`` when a value is not a string).
    """

    def where(i: int) -> str:
        if first_row is not None:
            return f"{column}[{first_row + i}]"
        quoted = "" if quote is None else quote(i)
        return f"{column}: the row at position {i} of a batch of {len(values)}{quoted}"

    shown = "; ".join(f"{where(i)} {reason}" for i, reason in problems[:_SHOWN_ROWS])
    more = len(problems) - _SHOWN_ROWS
    message = shown + (f"; and {more} more" if more > 0 else "")
    if len(problems) > 1:
        message = f"{len(problems)} rows of column {column!r} are not texts: {message}"
    message += (
        f". Remove them first, or skip them with {flag} (a null vector, and the reason in "
        f"column {error_column!r})"
    )
    kind = InputTypeError if any(not isinstance(values[i], str) for i, _ in problems) else None
    return (kind or InvalidRequestError)(message, param="input")


#: pandas' missing-value markers, by type name (pandas is not imported for this).
_PANDAS_MISSING = {"NAType": "<NA>", "NaTType": "NaT"}


def _type_problem(item: object) -> str:
    missing = _PANDAS_MISSING.get(type(item).__name__)
    if item is None or (isinstance(item, float) and item != item) or missing:
        missing = missing or ("None" if item is None else "NaN")
        return f"is {missing}, a missing value, not a string (every item must be a string)"
    return f"is {type(item).__name__}, not a string (every item must be a string)"


def text_problems(items: Sequence[object]) -> list[tuple[int, str]]:
    """``(position, why)`` of every item that cannot be embedded as a text."""
    return [(i, p) for i, p in enumerate(map(text_problem, items)) if p is not None]


def text_problem(item: object) -> str | None:
    """Why ``item`` cannot be embedded as a text, or None when it can."""
    if not isinstance(item, str):
        return _type_problem(item)
    if not item:
        return "is an empty string"
    if item.isspace():
        return "is only whitespace"
    return unicode_problem(item)


def unicode_problem(text: str) -> str | None:
    """Why ``text`` is not valid Unicode (a lone surrogate), or None when it is."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            return f"is not valid Unicode: {exc.reason} at character {exc.start}"
    return None


def check_texts(
    texts: Sequence[Any], *, name: str = "input", first_index: int = 0, param: str = "input"
) -> None:
    """Check that every item is a string with something besides whitespace, of valid Unicode.

    Raises:
        InvalidRequestError: Naming the first bad item as ``name[index]``
            (``InputTypeError`` when it is not a string), with ``param``.
    """
    for i, text in enumerate(texts, start=first_index):
        problem = text_problem(text)
        if problem is not None:
            kind = InvalidRequestError if isinstance(text, str) else InputTypeError
            raise kind(f"{name}[{i}] {problem}", param=param)


def check_rerank(query: object, documents: object, *, max_documents: int) -> None:
    """Check a rerank request: a query text and 1 to ``max_documents`` document texts.

    Raises:
        InvalidRequestError: Naming the field (``query``, ``documents``) and the index.
    """
    if not isinstance(query, str):
        raise InputTypeError(
            "query must be a string" if query is not None else "query is missing",
            param="query",
        )
    problem = text_problem(query)
    if problem is not None:
        raise InvalidRequestError(f"query {problem}", param="query")
    if isinstance(documents, (str, bytes)) or not isinstance(documents, Sequence):
        raise InputTypeError("documents must be a list of strings", param="documents")
    check_count(documents, max_documents, name="documents", param="documents")
    check_texts(documents, name="documents", param="documents")


def check_count(items: Sequence[Any], maximum: int | None, *, name: str, param: str) -> None:
    """Check that a request has 1 to ``maximum`` items (``None``: no limit)."""
    if len(items) == 0:
        raise InvalidRequestError(f"{name} must not be empty", param=param)
    if maximum is not None and len(items) > maximum:
        raise InvalidRequestError(
            f"{name} has {len(items)} items, more than the maximum of {maximum} per request",
            param=param,
        )


def check_task(spec: ModelSpec, task: str) -> None:
    """Check that the model does ``task`` (``embed`` or ``rerank``).

    Raises:
        ModelTypeError: It does the other (HTTP 400 ``unsupported_model``), saying what.
    """
    if spec.task == task:
        return
    if spec.task == "rerank":
        message = (
            f"Model '{spec.name}' is a reranker (cross-encoder): it scores query-document "
            "pairs and gives no embeddings; use it to rerank (POST v1/rerank, rerank())"
        )
    else:
        message = (
            f"Model '{spec.name}' is an embedding model: it embeds texts and cannot rerank; "
            "name a reranker (GET v1/models gives each model's task)"
        )
    raise ModelTypeError(message, model_type=spec.model_type)


def check_modality(spec: ModelSpec, modality: str) -> None:
    """Check that the model embeds ``modality`` (``text`` or ``image``).

    Raises:
        ModelTypeError: It does not (HTTP 400 ``unsupported_model``).
    """
    if modality not in spec.modalities:
        raise ModelTypeError(
            f"Model '{spec.name}' embeds {' and '.join(spec.modalities)} only, not {modality}s; "
            "name an image-text model such as SigLIP (GET v1/models gives each model's "
            "modalities)",
            model_type=spec.model_type,
        )


def check_images(images: object, *, max_inputs: int | None, first_index: int = 0) -> None:
    """Check a picture request's shape: 1 to ``max_inputs`` pictures of the kinds taken
    (each picture's content is checked when it is decoded).

    Raises:
        InvalidRequestError: Not a sequence, empty or too long, or an item of another kind.
    """
    from .images import is_image_item

    if isinstance(images, (str, bytes)) or not isinstance(images, Sequence):
        raise InputTypeError(
            "images must be a list of file paths, bytes, PIL images or uint8 arrays",
            param="input",
        )
    check_count(images, max_inputs, name="images", param="input")
    for i, item in enumerate(images, start=first_index):
        if not is_image_item(item):
            raise InputTypeError(
                f"images[{i}] must be a file path, bytes, a PIL image or a uint8 array, got "
                f"{type(item).__name__}",
                param="input",
            )


def check_inputs(
    inputs: object,
    *,
    max_inputs: int | None,
    allow_token_ids: bool = False,
    name: str = "input",
    first_index: int = 0,
) -> bool:
    """Check a request's inputs: 1 to ``max_inputs`` texts, or as many token-id rows.

    Args:
        inputs: A sequence of strings, or of rows of non-negative integer token ids.
        max_inputs: Most items allowed; ``None`` for no limit.
        allow_token_ids: Whether token-id rows are accepted at all.
        name: What the caller calls ``inputs``, for messages.
        first_index: Index of ``inputs[0]`` in the caller's own collection, for messages.

    Returns:
        Whether the inputs are token-id rows.

    Raises:
        InvalidRequestError: The inputs break a rule; the message names the item.
    """
    if isinstance(inputs, (str, bytes)) or not isinstance(inputs, Sequence):
        raise InputTypeError(
            f"{name} must be a list of strings or a list of token-id lists", param="input"
        )
    check_count(inputs, max_inputs, name=name, param="input")
    if isinstance(inputs[0], str):
        check_texts(inputs, name=name, first_index=first_index)
        return False
    if isinstance(inputs[0], bytes) or not isinstance(inputs[0], Sequence):
        # The first item decides what the others must be: name what it should have been.
        raise InputTypeError(
            f"{name}[{first_index}] must be a string or a list of token ids, got "
            f"{type(inputs[0]).__name__}",
            param="input",
        )
    if not allow_token_ids:
        raise InvalidRequestError(
            f"{name} holds token ids, which this server does not accept: ids from another "
            "tokenizer (such as the tiktoken ids that LangChain's OpenAIEmbeddings sends by "
            "default) would give vectors unrelated to the text. Send the texts themselves "
            "(LangChain: OpenAIEmbeddings(..., check_embedding_ctx_length=False)); servers "
            "whose clients send this model's own ids can set MLXEmbed.allow_token_ids.",
            param="input",
            code="token_ids_not_accepted",
        )
    for i, row in enumerate(inputs, start=first_index):
        if isinstance(row, (str, bytes)) or not isinstance(row, Sequence):
            raise InputTypeError(
                f"{name}[{i}] must be a list of token ids like the other items", param="input"
            )
        if len(row) == 0:
            raise InvalidRequestError(f"{name}[{i}] is an empty token list", param="input")
        for j, token in enumerate(row):
            if not _is_int(token) or token < 0:
                raise InvalidRequestError(
                    f"{name}[{i}] must contain only non-negative integer token ids; item {j} "
                    f"is {elide(token)}",
                    param="input",
                )
    return True


def check_dimensions(dimensions: object, maximum: int | None = None, *, model: str = "") -> None:
    """Check a ``dimensions`` value: ``None``, or an integer from 1 to ``maximum``.

    Raises:
        InvalidRequestError: With ``param="dimensions"``.
    """
    if dimensions is None:
        return
    if not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1:
        raise InvalidRequestError(
            f"dimensions must be a positive integer, got {elide(dimensions)}", param="dimensions"
        )
    if maximum is not None and dimensions > maximum:
        raise InvalidRequestError(
            f"dimensions must be between 1 and {maximum} for model '{model}', got {dimensions}",
            param="dimensions",
        )


def check_prompt(prompt_name: object, prompt: object, *, tokens: bool = False) -> None:
    """Check the prompt options of a request (their values are checked against the model's
    prompts once it is known: :func:`model_prompt`).

    Raises:
        InvalidRequestError: Not strings, not valid Unicode, a prompt over
            :data:`MAX_PROMPT_CHARS`, both given, or given with token-id inputs.
    """
    for field, value in (("prompt_name", prompt_name), ("prompt", prompt)):
        if value is not None and not isinstance(value, str):
            raise InvalidRequestError(
                f"{field} must be a string, got {type(value).__name__}", param=field
            )
        problem = None if value is None else unicode_problem(value)
        if problem is not None:
            raise InvalidRequestError(f"{field} {problem}", param=field)
    if isinstance(prompt, str) and len(prompt) > MAX_PROMPT_CHARS:
        raise InvalidRequestError(
            f"prompt has {len(prompt)} characters, more than the maximum of {MAX_PROMPT_CHARS} "
            "(it is put before every input)",
            param="prompt",
            code="prompt_too_long",
        )
    if prompt_name is not None and prompt is not None:
        raise InvalidRequestError("give prompt_name or prompt, not both", param="prompt")
    if tokens and (prompt_name is not None or prompt is not None):
        raise InvalidRequestError(
            "prompts apply to texts, not to token-id inputs", param="prompt_name"
        )


#: Prompt names every model answers to, empty where its config sets none (sentence-transformers
#: adds them to every model, so that ``encode_query`` and ``encode_document`` work with any).
IMPLIED_PROMPTS = ("query", "document")


def model_prompt(spec: ModelSpec, prompt_name: str | None, prompt: str | None) -> str:
    """The text to put before every input, as sentence-transformers chooses it: ``prompt``,
    else the model's prompt called ``prompt_name``, else its default prompt, else nothing.

    Raises:
        InvalidRequestError: The model has no prompt of that name (the message lists them).
    """
    if prompt is not None:
        return prompt
    name = prompt_name if prompt_name is not None else spec.default_prompt_name
    if name is None:
        return ""
    if name not in spec.prompts and name in IMPLIED_PROMPTS:
        return ""  # as sentence-transformers: every model has these, empty unless it sets them
    if name not in spec.prompts:
        known = ", ".join(repr(p) for p in spec.prompts) or "none"
        raise InvalidRequestError(
            f"Model '{spec.name}' has no prompt named {elide(name)}; its prompts: {known}",
            param="prompt_name",
            code="unknown_prompt",
        )
    return spec.prompts[name]
