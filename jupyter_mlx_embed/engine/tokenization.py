"""Tokenizers for model folders, via the Rust ``tokenizers`` library (pure: no MLX).

Texts are encoded with the model's special tokens and truncated to its maximum length.
Raw token-id inputs (the OpenAI API's ``input: [[ids]]``) are taken as the ids of the text
*without* special tokens, so they receive the same special tokens and give the same vector
as the text they came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..errors import InvalidRequestError

#: Texts encoded per call: the tokenizer's results are created and freed with the GIL held,
#: so a whole request at once (thousands of long texts) would stall every other thread, e.g.
#: the Jupyter server's event loop, for a tenth of a second.
_PIECE = 128


class TextTokenizer:
    """Encodes inputs for one model. Safe to call from any one thread at a time."""

    def __init__(self, path: Path, *, max_length: int, vocab_size: int) -> None:
        from tokenizers import Tokenizer

        self.max_length = max_length
        self.vocab_size = vocab_size
        self._tok = Tokenizer.from_file(str(path / "tokenizer.json"))
        self._tok.no_padding()
        self._tok.no_truncation()
        self._prefix, self._suffix = self._special_tokens()

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
        return [self._fit(row, where[i], truncate, tail=tail) for i, row in enumerate(ids)]

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

    def _fit(self, ids: list[int], index: int, truncate: bool, *, tail: int) -> list[int]:
        if len(ids) <= self.max_length:
            return ids
        if not truncate:
            raise InvalidRequestError(
                f"input[{index}] has {len(ids)} tokens, more than this model's maximum context "
                f"length of {self.max_length} tokens; shorten it or enable truncation",
                param="input",
                code="context_length_exceeded",
            )
        # Keep the trailing special tokens (e.g. [SEP]) as sentence-transformers does.
        keep = self.max_length - tail
        return ids[:keep] + ids[len(ids) - tail :] if tail else ids[:keep]
