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
from typing import Any

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


#: Standard-library packages whose docstrings make the labelled corpus: distinct subjects
#: (some close on purpose, e.g. threading / multiprocessing / asyncio), present on Linux and
#: macOS from Python 3.10 to 3.13, each with over 50 prose sentences.
LABELLED_PACKAGES = (
    "argparse", "asyncio", "codecs", "collections", "concurrent", "configparser", "decimal",
    "difflib", "doctest", "email", "http", "importlib", "inspect", "ipaddress", "json",
    "logging", "multiprocessing", "pathlib", "pdb", "re", "shutil", "smtplib", "socket",
    "ssl", "statistics", "subprocess", "tarfile", "threading", "typing", "unittest",
    "urllib", "xml", "zipfile",
)  # fmt: skip
_DOC_SENTENCE_END = re.compile(r"(?<=[a-z)\"*][.!?])\s+(?=[A-Z\"*])")


def labelled_sentences(
    per_label: int = 500, min_per_label: int = 50, seed: int = 0
) -> tuple[list[str], list[str]]:
    """Prose sentences of the standard library's docstrings, labelled by package.

    The reference manual's help topics (:func:`all_sentences`) hold under 2,000 distinct
    sentences, and its topics nest (``compound`` holds ``if``, ``while``...), so labels
    would overlap. Docstrings give several thousand sentences whose label, the package
    documented (``email``, ``ssl``, ``decimal``...), is a subject. Each package's modules,
    classes, functions and methods are read (test and ``__main__`` modules skipped); a
    sentence found under two packages is dropped; each label keeps at most ``per_label``
    sentences (chosen with ``seed``) and labels with fewer than ``min_per_label`` are
    dropped. Same texts on every machine with the same Python version.

    Returns:
        The sentences and their labels, shuffled together with ``seed``.
    """
    import importlib
    import inspect
    import pkgutil
    import warnings

    found: dict[str, set[str]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated modules warn when imported
        for package in LABELLED_PACKAGES:
            found[package] = {
                s for doc in _docstrings(package, importlib, inspect, pkgutil) for s in _prose(doc)
            }
    seen: dict[str, int] = {}
    for sentences_ in found.values():
        for s in sentences_:
            seen[s] = seen.get(s, 0) + 1
    rng = random.Random(seed)
    pairs = []
    for package, sentences_ in found.items():
        own = sorted(s for s in sentences_ if seen[s] == 1)
        if len(own) >= min_per_label:
            pairs += [(s, package) for s in rng.sample(own, min(per_label, len(own)))]
    rng.shuffle(pairs)
    return [s for s, _ in pairs], [label for _, label in pairs]


def _docstrings(package: str, importlib: Any, inspect: Any, pkgutil: Any) -> Iterator[str]:
    try:
        top = importlib.import_module(package)
    except ImportError:
        return
    modules = [top]
    for info in pkgutil.walk_packages(getattr(top, "__path__", []), package + "."):
        if any(part.startswith(("test", "__main__")) for part in info.name.split(".")):
            continue
        try:
            modules.append(importlib.import_module(info.name))
        except Exception:  # noqa: BLE001 - platform-specific modules (asyncio.windows_events)
            continue
    for module in modules:
        yield inspect.getdoc(module) or ""
        for obj in vars(module).values():
            if getattr(obj, "__module__", None) != module.__name__:
                continue  # imported from elsewhere: documented there
            yield inspect.getdoc(obj) or ""
            if inspect.isclass(obj):
                yield from (inspect.getdoc(m) or "" for m in vars(obj).values() if callable(m))


def _prose(doc: str) -> Iterator[str]:
    """The sentences of a docstring's prose paragraphs (doctest examples skipped)."""
    for block in re.split(r"\n\s*\n", doc):
        lines = [line.strip() for line in block.splitlines() if line.strip()]
        if not lines or lines[0].startswith((">>>", "...")):
            continue
        for sentence in _DOC_SENTENCE_END.split(" ".join(lines)):
            letters = sum(c.isalpha() or c == " " for c in sentence)
            if (
                40 <= len(sentence) <= 400
                and letters > 0.8 * len(sentence)
                and sentence[0].isupper()
                and sentence[-1] in ".!?"
            ):
                yield sentence
