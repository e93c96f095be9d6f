"""Tokenizers: a plain byte tokenizer, and byte-level BPE trained with Hugging Face ``tokenizers``."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path


class ByteTokenizer:
    """UTF-8 bytes as tokens (vocabulary 256): lossless on any text, no training."""

    kind = "byte"
    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"nestlearn_tokenizer": "byte"}))


class BPETokenizer:
    """Byte-level BPE (``tokenizers``), trained on the run's training text and saved with the run."""

    kind = "bpe"

    def __init__(self, tok):
        self._tok = tok
        self.vocab_size = tok.get_vocab_size()

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> BPETokenizer:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        if vocab_size < 257:
            raise ValueError(f"data.vocab_size must be ≥ 257 for BPE (256 bytes + merges); got {vocab_size}")
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      show_progress=False)
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text).ids

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode([int(i) for i in ids])

    def save(self, path: str | Path) -> None:
        self._tok.save(str(path))


def load_tokenizer(path: str | Path) -> ByteTokenizer | BPETokenizer:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer file not found: {path}")
    data = json.loads(path.read_text())
    if data.get("nestlearn_tokenizer") == "byte":
        return ByteTokenizer()
    from tokenizers import Tokenizer

    return BPETokenizer(Tokenizer.from_file(str(path)))
