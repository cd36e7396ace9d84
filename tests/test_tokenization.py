"""A text's tokenizing cost is bounded by the model's context: only its head is tokenized, and
the head gives exactly the whole text's truncated tokens, for WordPiece, byte-level BPE and
SentencePiece-style (Unigram + Metaspace) tokenizers."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from jupyter_mlx_embed import EngineConfig
from jupyter_mlx_embed.engine.tokenization import TextTokenizer
from jupyter_mlx_embed.errors import InvalidRequestError
from jupyter_mlx_embed.registry import ModelRegistry

PIECES = [
    "the", "Quick", "naïve", "café", "東京", "日本語のテキスト", "🙂", "...", "—", "__init__",
    "x" * 150, "a.b.c", "\u200b", "e.g.", "3.14159", "¿Qué?", "(", ")", "über", "#$%", "\u0301",
    "don't", "HTTP/1.1", "snake_case_words", "CamelCaseWords", "1,000,000",
]  # fmt: skip
GAPS = [" ", "", "  ", "\n", "\t", " \n "]


def _messy_texts(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [
        "".join(rng.choice(PIECES) + rng.choice(GAPS) for _ in range(rng.randint(100, 2500)))
        for _ in range(count)
    ]


def _trained(kind: str, folder: Path) -> Path:
    """A tokenizer.json of a BPE or Unigram tokenizer trained on the messy corpus."""
    if kind == "bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<s>", "</s>"])
    else:
        tok = Tokenizer(models.Unigram())
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=400, special_tokens=["<s>", "</s>"])
    tok.train_from_iterator(_messy_texts(50, seed=7), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 1)]
    )
    tok.save(str(folder / "tokenizer.json"))
    return folder


@pytest.fixture(scope="module", params=["wordpiece", "bpe", "unigram"])
def tokenizer(request, tmp_path_factory) -> TextTokenizer:
    if request.param == "wordpiece":  # the bundled all-MiniLM-L6-v2's
        folder = ModelRegistry(EngineConfig()).resolve(None).path
    else:
        folder = _trained(request.param, tmp_path_factory.mktemp(request.param))
    return TextTokenizer(folder, max_length=128, vocab_size=30522)


def test_head_gives_the_whole_texts_truncated_tokens(tokenizer: TextTokenizer) -> None:
    texts = _messy_texts(200, seed=1)
    raw = tokenizer._tok
    for text in texts:
        full = raw.encode(text, add_special_tokens=True).ids
        tail = tokenizer.specials - 1
        want = full if len(full) <= 128 else full[: 128 - tail] + full[len(full) - tail :]
        assert tokenizer.encode_texts([text, "x"])[0] == want
    assert sum(tokenizer.head(t) is not t for t in texts) > 100, "the corpus must exercise cuts"


def test_head_of_a_huge_text_is_bounded(tokenizer: TextTokenizer) -> None:
    text = "word " * 3_000_000  # 15 MB
    assert len(tokenizer.head(text)) < 5 * (128 + 32)
    assert len(tokenizer.encode_texts([text])[0]) == 128


def test_refusing_an_over_long_cut_text_says_more_than(tokenizer: TextTokenizer) -> None:
    with pytest.raises(InvalidRequestError, match=r"input\[4\] has more than \d+ tokens"):
        tokenizer.encode_texts(["word " * 10_000], truncate=False, positions=[4])
