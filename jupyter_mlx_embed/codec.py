"""The JSON codec of the HTTP bodies: request bodies decoded, answers encoded (pure).

Small bodies are decoded in one ``json`` call. Large ones (15 MB of texts or token ids) are
decoded and encoded in a thread by the HTTP layer, and here in pieces small enough that no
single C call holds the GIL for long: the event loop they share the process with (in
Jupyter, with every kernel's websocket) gets it back within about 10 ms (the GIL's 5 ms
switch interval included). The standard library's ``json`` is used on purpose: ``orjson`` and
``msgspec`` are faster, but decode or encode such a body in one call that holds the GIL for
20-60 ms (measured on 2 cores: see :func:`decode_json_in_pieces`).
"""

from __future__ import annotations

import json
import re
from typing import Any

from .errors import InvalidRequestError

#: The most JSON text one C-level ``json`` call decodes while other threads wait for the GIL
#: (about 2-4 ms of work); larger arrays and objects are decoded item by item.
_JSON_PIECE_CHARS = 256 * 1024


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json_body(body: bytes) -> Any:
    """Decode a request body as UTF-8 JSON.

    Raises:
        InvalidRequestError: Empty body, invalid UTF-8, invalid or too deeply nested JSON.
    """
    if not body or not body.strip():
        raise InvalidRequestError("The request body is empty; send a JSON object")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequestError(f"The request body is not valid UTF-8: {exc.reason}") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise InvalidRequestError("The request body is nested too deeply") from None
    except ValueError as exc:
        raise InvalidRequestError(f"The request body is not valid JSON: {exc}") from None


def parse_large_json_body(body: bytes) -> Any:
    """:func:`parse_json_body` for a body too large to decode in one call without stalling
    other threads (same errors and messages).

    Raises:
        InvalidRequestError: Empty body, invalid UTF-8, invalid or too deeply nested JSON.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return parse_json_body(body)  # raises the same error, stopping at the same byte
    if not text.strip():
        return parse_json_body(body)
    try:
        return decode_json_in_pieces(text)
    except RecursionError:
        raise InvalidRequestError("The request body is nested too deeply") from None
    except ValueError as exc:
        raise InvalidRequestError(f"The request body is not valid JSON: {exc}") from None


#: Encoded answers come in pieces of about this many bytes, each sent on its own.
PIECE_BYTES = 1 << 20


def encode_json_in_pieces(obj: dict[str, Any] | list[Any]) -> list[bytes]:
    """``json.dumps(obj).encode()`` in pieces of about :data:`PIECE_BYTES`, with the items of
    lists (the top level's, or its values') encoded one at a time, so that no single C call
    holds the GIL for long: a 2,048 x 384 float answer takes ~0.3 s in one ``json.dumps``,
    and even joining it into one 17 MB string holds the GIL 5-30 ms."""
    pieces: list[bytes] = []
    parts: list[str] = []
    size = 0

    def add(text: str) -> None:
        nonlocal size
        parts.append(text)
        size += len(text)
        if size >= PIECE_BYTES:
            pieces.append("".join(parts).encode())  # json.dumps writes ASCII: chars are bytes
            parts.clear()
            size = 0

    def add_list(items: list[Any]) -> None:
        add("[")
        for i, item in enumerate(items):
            add(f", {json.dumps(item)}" if i else json.dumps(item))
        add("]")

    if isinstance(obj, list):
        add_list(obj)
    else:
        add("{")
        for i, (key, value) in enumerate(obj.items()):
            add(f"{', ' if i else ''}{json.dumps(key)}: ")
            if isinstance(value, list):
                add_list(value)
            else:
                add(json.dumps(value))
        add("}")
    if parts:
        pieces.append("".join(parts).encode())
    return pieces


# -- decoding in pieces ------------------------------------------------------------------

_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_NUMBERS = re.compile(r"[-+.0-9eE \t\n\r,]{1,65536}")


def _skip(text: str, index: int) -> int:
    match = _WHITESPACE.match(text, index)
    assert match is not None  # the pattern matches the empty string
    return match.end()


def decode_json_in_pieces(text: str) -> Any:
    """``json.loads(text)`` (``NaN`` and ``Infinity`` refused), decoded so that no single C
    call handles more than about 256 KiB: arrays and objects with more text after them are
    walked item by item, and runs of numbers are decoded 64 KiB at a time.

    Measured on 2 cores, while a thread decodes a 15 MB body of 2,048 rows of 1,800 token
    ids, an event loop waits at most 8-10 ms (the GIL's 5 ms switch interval included); one
    ``json.loads`` holds the GIL for ~120 ms, one ``orjson.loads`` ~60 ms, one
    ``msgspec.json.decode`` ~40 ms. Encoding a 2,048 x 384 float answer: one
    ``orjson.dumps`` ~20 ms, one ``msgspec.json.encode`` ~33 ms (see
    :func:`encode_json_in_pieces`).

    Raises:
        ValueError: As ``json.loads`` (a ``json.JSONDecodeError`` at the same position).
        RecursionError: Too deeply nested.
    """
    value, end = _decode_value(text, _skip(text, 0))
    end = _skip(text, end)
    if end != len(text):
        raise json.JSONDecodeError("Extra data", text, end)
    return value


def _decode_value(text: str, index: int) -> tuple[Any, int]:
    if len(text) - index > _JSON_PIECE_CHARS:
        opener = text[index : index + 1]
        if opener == "[":
            return _decode_array(text, index + 1)
        if opener == "{":
            return _decode_object(text, index + 1)
    value, end = _DECODER.raw_decode(text, index)
    return value, end


def _decode_array(text: str, index: int) -> tuple[list[Any], int]:
    items: list[Any] = []
    index = _skip(text, index)
    if text.startswith("]", index):
        return items, index + 1
    while True:
        first = text[index : index + 1]
        if first and first in "-0123456789":
            # A run of numbers (a token-id row): decode up to its last comma in one call.
            run = _NUMBERS.match(text, index)
            cut = text.rfind(",", index, run.end() if run else index)
            if cut > index:
                try:
                    items.extend(_DECODER.decode("[" + text[index:cut] + "]"))
                except json.JSONDecodeError as exc:
                    raise json.JSONDecodeError(exc.msg, text, index + exc.pos - 1) from None
                index = _skip(text, cut + 1)
                continue
        item, index = _decode_value(text, index)
        items.append(item)
        closed, index = _after_item(text, index, "]")
        if closed:
            return items, index


def _decode_object(text: str, index: int) -> tuple[dict[str, Any], int]:
    members: dict[str, Any] = {}
    index = _skip(text, index)
    if text.startswith("}", index):
        return members, index + 1
    while True:
        if not text.startswith('"', index):
            raise json.JSONDecodeError(
                "Expecting property name enclosed in double quotes", text, index
            )
        key, index = _DECODER.raw_decode(text, index)
        index = _skip(text, index)
        if not text.startswith(":", index):
            raise json.JSONDecodeError("Expecting ':' delimiter", text, index)
        value, index = _decode_value(text, _skip(text, index + 1))
        members[key] = value
        closed, index = _after_item(text, index, "}")
        if closed:
            return members, index


def _after_item(text: str, index: int, close: str) -> tuple[bool, int]:
    """After an array item or object member: whether ``close`` ends the container, and the
    index past it or past the comma before the next item."""
    index = _skip(text, index)
    if text.startswith(close, index):
        return True, index + 1
    if not text.startswith(",", index):
        raise json.JSONDecodeError("Expecting ',' delimiter", text, index)
    return False, _skip(text, index + 1)
