"""Tokenizers for model folders, via the Rust ``tokenizers`` library (pure: no MLX).

Texts are encoded with the model's special tokens and truncated to its maximum length.
Raw token-id inputs (the OpenAI API's ``input: [[ids]]``) are taken as the ids of the text
*without* special tokens, so they receive the same special tokens and give the same vector
as the text they came from.

A text's tokenizing cost is bounded by the model's context, not by the text's length: only
its head is tokenized (:meth:`TextTokenizer.head`), since the rest is truncated away anyway.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import InvalidRequestError

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


class TextTokenizer:
    """Encodes inputs for one model. Safe to call from any one thread at a time."""

    def __init__(
        self, path: Path, *, max_length: int, vocab_size: int, segments: bool = False
    ) -> None:
        from tokenizers import Tokenizer

        self.max_length = max_length
        self.vocab_size = vocab_size
        self._segments = segments
        self._pairs: Any = None  # the pair encoder, made on first use
        self._tok = Tokenizer.from_file(str(path / "tokenizer.json"))
        _drop_extra_whitespace(self._tok)
        self._tok.no_padding()
        self._tok.no_truncation()
        self._prefix, self._suffix = self._special_tokens()
        self.specials = len(self._prefix) + len(self._suffix)

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
        if len(ids) <= self.max_length:
            return ids
        if not truncate:
            count = f"more than {len(ids)}" if cut else f"{len(ids)}"
            raise InvalidRequestError(
                f"input[{index}] has {count} tokens, more than this model's maximum context "
                f"length of {self.max_length} tokens; shorten it or enable truncation",
                param="input",
                code="context_length_exceeded",
            )
        # Keep the trailing special tokens (e.g. [SEP]) as sentence-transformers does.
        keep = self.max_length - tail
        return ids[:keep] + ids[len(ids) - tail :] if tail else ids[:keep]
