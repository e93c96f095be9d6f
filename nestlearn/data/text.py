"""Text sources and packed token streams.

``read_texts(path)`` yields documents from a text file, a ``.gz`` file, a ``.jsonl`` file (its
``text`` field), a folder of those (sorted, recursively), or ``hf:NAME[:CONFIG][@SPLIT]`` (a Hugging Face
dataset, when ``datasets`` is installed and the network allows). ``TokenStream`` tokenises them once into a
memmap file cached by a hash of (files, sizes, tokenizer), and serves batches that depend only on
the step number: training is deterministic and resumes from the step alone.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

TEXT_SUFFIXES = (".txt", ".text", ".tokens", ".raw", ".jsonl", ".gz")  # not .md: a dataset README is no text


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(TEXT_SUFFIXES)
                      and not p.name.startswith("."))
    raise FileNotFoundError(f"text source not found: {path}")


def read_hf_dataset(spec: str) -> Iterator[str]:
    """``hf:NAME[:CONFIG][@SPLIT]`` → the ``text`` field of a Hugging Face dataset (needs the
    ``datasets`` package and network access; optional, never used by the tests)."""
    try:
        import datasets
    except ImportError as e:
        raise ValueError(f"{spec!r} needs the 'datasets' package: pip install datasets") from e
    body, _, split = spec[3:].partition("@")
    name, _, config = body.partition(":")
    for row in datasets.load_dataset(name, config or None, split=split or "train", streaming=True):
        if "text" not in row:
            raise ValueError(f"{spec}: rows have no 'text' field (fields: {sorted(row)})")
        yield row["text"]


def read_texts(path: str | Path) -> Iterator[str]:
    if str(path).startswith("hf:"):
        yield from read_hf_dataset(str(path))
        return
    files = _files(Path(path))
    if not files:
        raise FileNotFoundError(f"no text files ({', '.join(TEXT_SUFFIXES)}) under {path}")
    for f in files:
        opener = gzip.open if f.suffix == ".gz" else open
        with opener(f, "rt", encoding="utf-8", errors="replace") as fh:
            if f.name.endswith((".jsonl", ".jsonl.gz")):
                for i, line in enumerate(fh):
                    if line.strip():
                        try:
                            yield json.loads(line)["text"]
                        except (json.JSONDecodeError, KeyError) as e:
                            raise ValueError(f"{f}:{i + 1}: expected a JSON object with a 'text' field") from e
            else:
                yield fh.read()


def source_fingerprint(path: str | Path, tokenizer_id: str) -> str:
    h = hashlib.sha256(tokenizer_id.encode())
    if str(path).startswith("hf:"):  # a named dataset: its name is its identity
        h.update(str(path).encode())
        return h.hexdigest()[:16]
    for f in _files(Path(path)):
        st = f.stat()
        h.update(f"{f.resolve()}|{st.st_size}|{int(st.st_mtime)}".encode())
    return h.hexdigest()[:16]


class TokenStream:
    """One long token array (documents joined with an end-of-text separator) on disk."""

    def __init__(self, tokens: np.ndarray):
        self.tokens = tokens

    @classmethod
    def build(cls, path: str | Path, tokenizer, cache_dir: str | Path, tokenizer_id: str,
              separator: int | None = None) -> TokenStream:
        cache_dir = Path(cache_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        key = source_fingerprint(path, tokenizer_id)
        file = cache_dir / f"tokens-{key}.npy"
        if not file.is_file():
            ids: list[int] = []
            for text in read_texts(path):
                ids.extend(tokenizer.encode(text))
                if separator is not None:
                    ids.append(separator)
            dtype = np.uint16 if tokenizer.vocab_size <= 65535 else np.uint32
            tmp = file.with_name(file.name + ".tmp.npy")
            np.save(tmp, np.asarray(ids, dtype=dtype))
            tmp.replace(file)
        return cls(np.load(file, mmap_mode="r"))

    def __len__(self) -> int:
        return len(self.tokens)

    def windows(self, seq_len: int) -> int:
        return (len(self.tokens) - 1) // seq_len

    def batch(self, step: int, batch_size: int, seq_len: int, seed: int) -> tuple[Tensor, Tensor]:
        """Batch ``step``: ``batch_size`` windows of ``seq_len + 1`` tokens from a seeded permutation of
        the non-overlapping windows (a new permutation each epoch). A pure function of its arguments."""
        n = self.windows(seq_len)
        if n < batch_size:
            raise ValueError(f"the token stream holds {n} windows of {seq_len + 1} tokens, fewer than "
                             f"batch_size={batch_size}; use more text or a shorter data.seq_len")
        per_epoch = n // batch_size
        epoch, i = divmod(step, per_epoch)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch))
        starts = perm[i * batch_size:(i + 1) * batch_size] * seq_len
        rows = np.stack([np.asarray(self.tokens[s:s + seq_len + 1], dtype=np.int64) for s in starts.tolist()])
        t = torch.from_numpy(rows)
        return t[:, :-1], t[:, 1:]
