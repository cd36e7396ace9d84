"""Deterministic benchmark texts cut from the prose of Python's own reference manual.

The text comes from the standard library's ``pydoc_data.topics`` (the help pages of the
language reference), so it is real English prose, identical on every machine with the same
Python version, and needs no network. Code samples, grammar rules and headings are dropped;
what is left is split into sentences and into paragraphs and sampled with a fixed seed.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from pathlib import Path

from tokenizers import Tokenizer

MAX_TOKENS = 256  # all-MiniLM-L6-v2's max_seq_length (sentence_bert_config.json)
_SENTENCE_END = re.compile(r"(?<=[a-z)][.!?])\s+(?=[A-Z])")
_RULE = re.compile(r"^[*=\-^~#+\s]+$")


def load_tokenizer(model_path: Path) -> Tokenizer:
    """The model's tokenizer, truncating as both sides do (special tokens included)."""
    tok = Tokenizer.from_file(str(model_path / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length=MAX_TOKENS)
    return tok


def count_tokens(tok: Tokenizer, texts: list[str]) -> list[int]:
    """Tokens each text becomes in the model (special tokens included, after truncation)."""
    return [len(enc.ids) for enc in tok.encode_batch(texts, add_special_tokens=True)]


def _prose_paragraphs() -> Iterator[list[str]]:
    """Per help topic, its prose paragraphs as single lines (code and headings removed)."""
    from pydoc_data.topics import topics

    for key in sorted(topics):
        paragraphs = []
        for block in re.split(r"\n\s*\n", topics[key]):
            lines = block.strip("\n").splitlines()
            if not lines or any(line[:1].isspace() or _RULE.match(line) for line in lines):
                continue  # indented code/grammar, or a heading with its underline
            text = " ".join(line.strip() for line in lines)
            letters = sum(c.isalpha() or c == " " for c in text)
            if len(text) > 40 and letters > 0.85 * len(text) and text[-1] in ".:":
                paragraphs.append(text)
        yield paragraphs


def all_sentences(tok: Tokenizer, lo: int = 8, hi: int = 40, seed: int = 0) -> list[str]:
    """Every distinct sentence of ``lo``-``hi`` tokens, shuffled with ``seed``."""
    pool = sorted(
        {s for topic in _prose_paragraphs() for p in topic for s in _SENTENCE_END.split(p)}
    )
    pool = [s for s, k in zip(pool, count_tokens(tok, pool), strict=True) if lo <= k <= hi]
    random.Random(seed).shuffle(pool)
    return pool


def sentences(tok: Tokenizer, n: int, lo: int = 8, hi: int = 40, seed: int = 0) -> list[str]:
    """The first ``n`` of :func:`all_sentences`."""
    pool = all_sentences(tok, lo, hi, seed)
    if len(pool) < n:
        raise SystemExit(f"only {len(pool)} sentences of {lo}-{hi} tokens in the corpus")
    return pool[:n]


def paragraphs(tok: Tokenizer, n: int, lo: int = 128, hi: int = 256, seed: int = 0) -> list[str]:
    """``n`` passages of ``lo``-``hi`` tokens: consecutive paragraphs of one topic, joined."""
    pool: list[str] = []
    for topic in _prose_paragraphs():
        current: list[str] = []
        for para in topic:
            joined = [*current, para]
            k = count_tokens(tok, [" ".join(joined)])[0]
            if k >= hi:  # overshot: start again from this paragraph alone
                joined, k = [para], count_tokens(tok, [para])[0]
            if lo <= k < hi:
                pool.append(" ".join(joined))
                current = []
            else:
                current = joined if k < hi else []
    random.Random(seed).shuffle(pool)
    if len(pool) < n:
        raise SystemExit(f"only {len(pool)} passages of {lo}-{hi} tokens in the corpus")
    return pool[:n]


def sentence_pairs(tok: Tokenizer, n: int, seed: int = 0) -> list[str]:
    """``n`` distinct texts, each two sentences of the corpus joined (for workloads that need
    more distinct texts than the corpus has sentences, e.g. a cache of 20,000)."""
    pool = all_sentences(tok, seed=seed)
    rng = random.Random(seed)
    seen: set[tuple[int, int]] = set()
    while len(seen) < n:
        pair = (rng.randrange(len(pool)), rng.randrange(len(pool)))
        if pair[0] != pair[1]:
            seen.add(pair)
    return [f"{pool[a]} {pool[b]}" for a, b in sorted(seen, key=lambda p: rng.random())]
