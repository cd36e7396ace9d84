"""Tokenizers for model folders, via the Rust ``tokenizers`` library, or ``sentencepiece`` for a
SigLIP folder as Google publishes it (``spiece.model``, no ``tokenizer.json``) (pure: no MLX).

Texts are encoded with the model's special tokens and truncated to its maximum length.
Raw token-id inputs (the OpenAI API's ``input: [[ids]]``) are taken as the ids of the text
*without* special tokens, so they receive the same special tokens and give the same vector
as the text they came from.

A text's tokenizing cost is bounded by the model's context, not by the text's length: only
its head is tokenized (:meth:`TextTokenizer.head`), since the rest is truncated away anyway.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import InvalidRequestError, ModelLoadError

#: Texts encoded per call: the tokenizer's results are created and freed with the GIL held,
#: so a whole request at once (thousands of long texts) would stall every other thread, e.g.
#: the Jupyter server's event loop, for a tenth of a second.
_PIECE = 128

#: The start of a whitespace-separated word with a letter or digit. Every tokenizer gives such
#: a word at least one token of its own (WordPiece, byte-level BPE and SentencePiece split at
#: whitespace and keep letters and digits), so a text's words bound its tokens from below.
#: The lookbehind makes each word start one attempt, so a scan is linear in the text.
_WORD = re.compile(r"(?<!\S)[^\s\w]*[^\W_]")
#: Texts shorter than this many characters per token of context are tokenized whole.
_HEAD_CHARS_PER_TOKEN = 8
#: Words kept beyond the context's length, for the tokens at a word's edge.
_HEAD_MARGIN = 16


def _drop_extra_whitespace(tok: Any) -> None:
    """Split a SentencePiece (Unigram) tokenizer's text at whitespace before its Metaspace step.

    SentencePiece itself drops leading, trailing and repeated whitespace, and so do
    transformers' XLM-R-style tokenizers (since transformers 5, whatever ``tokenizer.json``
    says); ``tokenizer.json`` files converted earlier keep a lone ``▁`` token for trailing
    whitespace, so such a text would get one token more than sentence-transformers gives it.
    """
    from tokenizers import pre_tokenizers

    if type(tok.model).__name__ == "Unigram" and type(tok.pre_tokenizer).__name__ == "Metaspace":
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.WhitespaceSplit(), tok.pre_tokenizer]
        )


def load_tokenizer(
    path: Path, *, max_length: int, vocab_size: int, segments: bool = False, pad: bool = False
) -> BaseTokenizer:
    """The tokenizer of a model folder: its ``tokenizer.json``, else its ``spiece.model``
    (SigLIP's, see :class:`SentencePieceTokenizer`). ``pad``: rows padded to ``max_length``
    (a model trained on padded texts that reads them without a mask: SigLIP)."""
    if (path / "tokenizer.json").is_file():
        return TextTokenizer(
            path, max_length=max_length, vocab_size=vocab_size, segments=segments, pad=pad
        )
    return SentencePieceTokenizer(path, max_length=max_length, vocab_size=vocab_size, pad=pad)


class BaseTokenizer:
    """What every tokenizer here shares: the head of a long text, the special tokens around a
    row (``_prefix``, ``_suffix``), truncation and padding of rows, raw token-id rows."""

    max_length: int
    vocab_size: int
    _prefix: list[int]
    _suffix: list[int]
    #: Rows are padded to ``max_length`` with this id (None: not padded).
    _pad_id: int | None = None

    @property
    def specials(self) -> int:
        """Special tokens a row gets around its text's."""
        return len(self._prefix) + len(self._suffix)

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` without special tokens (e.g. a prompt's)."""
        raise NotImplementedError

    def encode_texts(
        self, texts: Sequence[str], *, truncate: bool = True, positions: Sequence[int] = ()
    ) -> list[list[int]]:
        """Token ids of each text, special tokens included (``positions``: the caller's index
        of each text, for messages).

        Raises:
            InvalidRequestError: ``truncate`` is false and a text is longer than the maximum.
        """
        raise NotImplementedError

    def encode_pairs(
        self,
        query: str,
        documents: Sequence[str],
        *,
        truncate: bool = True,
        positions: Sequence[int] = (),
    ) -> list[list[int]]:
        """Token ids of each (query, document) pair, for a reranker."""
        raise NotImplementedError(f"{type(self).__name__} encodes no pairs")

    def head(self, text: str) -> str:
        """The start of ``text`` whose tokens, truncated to the context, are the whole text's.

        It ends at a word boundary after more words than the context has tokens: words are
        tokenized apart, so the tokens up to that boundary are the whole text's, and they
        already fill the context. A text with fewer words is returned whole.
        """
        if len(text) <= self.max_length * _HEAD_CHARS_PER_TOKEN:
            return text
        for count, word in enumerate(_WORD.finditer(text)):
            if count == self.max_length + _HEAD_MARGIN:
                return text[: word.start()]
        return text

    def wrap_token_ids(
        self, rows: Sequence[Sequence[int]], *, truncate: bool = True, positions: Sequence[int] = ()
    ) -> list[list[int]]:
        """Add special tokens to raw token-id rows and validate them.

        Raises:
            InvalidRequestError: An id is outside the vocabulary, or a row is too long and
                ``truncate`` is false.
        """
        out = []
        where = positions or range(len(rows))
        for i, row in zip(where, rows, strict=True):
            for token in row:
                if not 0 <= token < self.vocab_size:
                    raise InvalidRequestError(
                        f"Invalid token id {token} in input[{i}]: ids must be in "
                        f"[0, {self.vocab_size})",
                        param="input",
                    )
            full = [*self._prefix, *row, *self._suffix]
            out.append(self._fit(full, i, truncate, tail=len(self._suffix)))
        return out

    def _fit(
        self, ids: list[int], index: int, truncate: bool, *, tail: int, cut: bool = False
    ) -> list[int]:
        """``ids`` within the context (truncated keeping the ``tail`` trailing special
        tokens, as sentence-transformers does), padded where the model wants it."""
        if len(ids) > self.max_length:
            if not truncate:
                count = f"more than {len(ids)}" if cut else f"{len(ids)}"
                raise InvalidRequestError(
                    f"input[{index}] has {count} tokens, more than this model's maximum "
                    f"context length of {self.max_length} tokens; shorten it or enable "
                    "truncation",
                    param="input",
                    code="context_length_exceeded",
                )
            keep = self.max_length - tail
            ids = ids[:keep] + ids[len(ids) - tail :] if tail else ids[:keep]
        if self._pad_id is not None and len(ids) < self.max_length:
            ids = ids + [self._pad_id] * (self.max_length - len(ids))
        return ids


class TextTokenizer(BaseTokenizer):
    """Encodes inputs for one model. Safe to call from any one thread at a time."""

    def __init__(
        self,
        path: Path,
        *,
        max_length: int,
        vocab_size: int,
        segments: bool = False,
        pad: bool = False,
    ) -> None:
        from tokenizers import Tokenizer

        self.max_length = max_length
        self.vocab_size = vocab_size
        self._segments = segments
        self._pairs: Any = None  # the pair encoder, made on first use
        self._tok = Tokenizer.from_file(str(path / "tokenizer.json"))
        padding = self._tok.padding  # the file's own padding, read before it is turned off
        _drop_extra_whitespace(self._tok)
        self._tok.no_padding()
        self._tok.no_truncation()
        self._prefix, self._suffix = self._special_tokens()
        if pad:
            last = self._suffix[-1] if self._suffix else 0
            self._pad_id = int(padding["pad_id"]) if padding else last

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` without special tokens (e.g. a prompt's)."""
        return len(self._tok.encode(text, add_special_tokens=False).ids)

    def _special_tokens(self) -> tuple[list[int], list[int]]:
        """The ids the post-processor puts before and after a single sequence."""
        plain = self._tok.encode("a", add_special_tokens=False).ids
        full = self._tok.encode("a", add_special_tokens=True).ids
        for start in range(len(full) - len(plain) + 1):
            if full[start : start + len(plain)] == plain:
                return full[:start], full[start + len(plain) :]
        return [], []

    def encode_texts(
        self, texts: Sequence[str], *, truncate: bool = True, positions: Sequence[int] = ()
    ) -> list[list[int]]:
        """Token ids of each text, special tokens included (``positions``: the caller's index
        of each text, for messages; by default their index here).

        Raises:
            InvalidRequestError: ``truncate`` is false and a text is longer than the maximum.
        """
        heads = [self.head(text) for text in texts]
        cut = {
            i for i, (head, text) in enumerate(zip(heads, texts, strict=True)) if head is not text
        }
        texts = heads
        ids: list[list[int]]
        if len(texts) == 1:
            # encode_batch hands even one text to the tokenizer's thread pool, whose waking
            # threads cost a single-text request about 0.15 ms (TOKENIZERS_PARALLELISM on).
            ids = [self._tok.encode(texts[0], add_special_tokens=True).ids]
        else:
            ids = []
            for start in range(0, len(texts), _PIECE):
                piece = self._tok.encode_batch(
                    list(texts[start : start + _PIECE]), add_special_tokens=True
                )
                ids.extend(enc.ids for enc in piece)
        tail = len(self._suffix)
        where = positions or range(len(ids))
        return [
            self._fit(row, where[i], truncate, tail=tail, cut=i in cut) for i, row in enumerate(ids)
        ]

    def encode_pairs(
        self,
        query: str,
        documents: Sequence[str],
        *,
        truncate: bool = True,
        positions: Sequence[int] = (),
    ) -> list[list[int]]:
        """Token ids of each (query, document) pair as the tokenizer's pair template joins
        them (a reranker's input), cut to the context longest-first (the longer text loses a
        token at a time), as transformers' tokenizers and so sentence-transformers'
        ``CrossEncoder`` do. With ``segments``, the document's ids (type 1) are offset by
        ``vocab_size`` (see ``cpu_kernels.split_segments``).

        Raises:
            InvalidRequestError: ``truncate`` is false and a pair is longer than the maximum.
        """
        if self._pairs is None:
            from tokenizers import Tokenizer

            self._pairs = Tokenizer.from_str(self._tok.to_str())
            self._pairs.enable_truncation(self.max_length, strategy="longest_first")
        query = self.head(query)
        pairs = [(query, self.head(doc)) for doc in documents]
        encoded = []
        for start in range(0, len(pairs), _PIECE):
            encoded.extend(self._pairs.encode_batch(pairs[start : start + _PIECE]))
        where = positions or range(len(encoded))
        rows = []
        for i, enc in zip(where, encoded, strict=True):
            if enc.overflowing and not truncate:
                raise InvalidRequestError(
                    f"documents[{i}] with the query has more than {self.max_length} tokens, "
                    "this model's maximum context length; shorten it or enable truncation",
                    param="documents",
                    code="context_length_exceeded",
                )
            if self._segments:
                offset = self.vocab_size
                rows.append([t + offset * k for t, k in zip(enc.ids, enc.type_ids, strict=True)])
            else:
                rows.append(list(enc.ids))
        return rows


#: SigLIP's text clean-up before SentencePiece: ASCII punctuation removed (transformers'
#: ``SiglipTokenizer.canonicalize_text``), then runs of whitespace made one space.
_PUNCTUATION = str.maketrans("", "", string.punctuation)
_SPACES = re.compile(r"\s+")


class SentencePieceTokenizer(BaseTokenizer):
    """SigLIP's tokenizer from ``spiece.model``, as transformers' ``SiglipTokenizer`` encodes:
    the text lowercased (``do_lower_case``), its punctuation removed and its whitespace
    collapsed, then SentencePiece, then ``</s>``. Special tokens written in the text (``</s>``,
    ``<unk>``) are those tokens, the whitespace around them dropped, and the text after one
    gets no leading word boundary. Safe to call from any one thread at a time."""

    def __init__(self, path: Path, *, max_length: int, vocab_size: int, pad: bool = True) -> None:
        import sentencepiece as spm

        self.max_length = max_length
        self.vocab_size = vocab_size
        self._sp = spm.SentencePieceProcessor(model_file=str(path / "spiece.model"))
        config = _read_config(path / "tokenizer_config.json")
        self._lower = bool(config.get("do_lower_case", True))
        eos, unk = _token(config, "eos_token", "</s>"), _token(config, "unk_token", "<unk>")
        self._specials = {t: self._sp.piece_to_id(t) for t in (eos, unk)}
        self._split = re.compile(r"\s*(" + "|".join(map(re.escape, self._specials)) + r")\s*")
        # Text after a special token is encoded behind this marker, then the marker's pieces
        # are dropped: so it gets no word boundary of its own (SentencePiece adds one at a
        # text's start), as in SiglipTokenizer.
        self._marker = unk
        self._marker_pieces = len(self._sp.encode(unk))
        self._prefix, self._suffix = [], [self._specials[eos]]
        if pad:
            self._pad_id = self._sp.piece_to_id(_token(config, "pad_token", eos))

    def _clean(self, text: str) -> str:
        if self._lower:
            text = text.lower()
        return _SPACES.sub(" ", text.translate(_PUNCTUATION)).strip()

    def _ids(self, text: str) -> list[int]:
        """A text's ids, without ``</s>``."""
        ids: list[int] = []
        parts = self._split.split(text.replace("▁", " "))
        for k, part in enumerate(parts):
            if k % 2:  # a special token
                ids.append(self._specials[part])
                continue
            clean = self._clean(part)
            if not clean:
                continue
            if k == 0:
                ids.extend(self._sp.encode(clean))
            else:
                ids.extend(self._sp.encode(self._marker + clean)[self._marker_pieces :])
        return ids

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` without special tokens (e.g. a prompt's)."""
        return len(self._ids(self.head(text)))

    def encode_texts(
        self, texts: Sequence[str], *, truncate: bool = True, positions: Sequence[int] = ()
    ) -> list[list[int]]:
        """See :meth:`BaseTokenizer.encode_texts` (the special token: ``</s>`` at the end)."""
        where = positions or range(len(texts))
        rows = []
        for i, text in zip(where, texts, strict=True):
            head = self.head(text)
            row = [*self._ids(head), *self._suffix]
            rows.append(self._fit(row, i, truncate, tail=1, cut=head is not text))
        return rows


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"Cannot read {path}: {exc}") from exc
    return config if isinstance(config, dict) else {}


def _token(config: dict[str, Any], key: str, default: str) -> str:
    """A special token's text in ``tokenizer_config.json`` (a string or an AddedToken dict)."""
    value = config.get(key, default)
    if isinstance(value, dict):
        value = value.get("content", default)
    return value if isinstance(value, str) else default
