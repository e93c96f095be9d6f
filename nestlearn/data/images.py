"""Readers for the image sets in ``../shared/data`` (CIFAR-10 subset, Fashion-MNIST), as float
tensors ``[N, C, H, W]`` normalised per channel with the training set's statistics."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch
from torch import Tensor


def _normalise(x_train: Tensor, x_test: Tensor) -> tuple[Tensor, Tensor]:
    mean = x_train.mean(dim=(0, 2, 3), keepdim=True)
    std = x_train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    return (x_train - mean) / std, (x_test - mean) / std


def load_cifar10_subset(root: str | Path) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``x_train [10000, 3, 32, 32], y_train, x_test [2000, 3, 32, 32], y_test`` from
    ``root/cifar10_subset.npz``."""
    path = Path(root) / "cifar10_subset.npz"
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR-10 subset not found: {path} (expected ../shared/data/cifar10_subset)")
    with np.load(path) as d:
        xs = [torch.from_numpy(d[k]).permute(0, 3, 1, 2).float() / 255 for k in ("x_train", "x_test")]
        ys = [torch.from_numpy(d[k].astype(np.int64)) for k in ("y_train", "y_test")]
    x_train, x_test = _normalise(*xs)
    return x_train, ys[0], x_test, ys[1]


def _idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[:4], "big")
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(magic & 0xFF)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * len(dims)).reshape(dims)


def load_fashion_mnist(root: str | Path) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``x_train [10000, 1, 28, 28], y_train, x_test [10000, 1, 28, 28], y_test`` from the IDX files in
    ``root`` (``train10k-*`` or the full ``train-*``)."""
    root = Path(root)
    train = "train10k" if (root / "train10k-images-idx3-ubyte.gz").is_file() else "train"
    files = [root / f"{train}-images-idx3-ubyte.gz", root / f"{train}-labels-idx1-ubyte.gz",
             root / "t10k-images-idx3-ubyte.gz", root / "t10k-labels-idx1-ubyte.gz"]
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"Fashion-MNIST file not found: {f} (expected ../shared/data/fashion_mnist)")
    xtr, ytr, xte, yte = (_idx(f) for f in files)
    x_train, x_test = _normalise(torch.from_numpy(xtr.copy()).float().unsqueeze(1) / 255,
                                 torch.from_numpy(xte.copy()).float().unsqueeze(1) / 255)
    return x_train, torch.from_numpy(ytr.astype(np.int64)), x_test, torch.from_numpy(yte.astype(np.int64))


def stratified_split(y: Tensor, share: float, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Indices ``(rest, held)``: a seeded random ``share`` of every class held out (so both parts hold
    every class in its proportion, whatever the order of the file), each in the original order."""
    g = torch.Generator().manual_seed(seed)
    held = []
    for c in torch.unique(y):
        idx = (y == c).nonzero().squeeze(1)
        held.append(idx[torch.randperm(len(idx), generator=g)][:round(share * len(idx))])
    held_idx = torch.cat(held).sort().values
    keep = torch.ones(len(y), dtype=torch.bool)
    keep[held_idx] = False
    return keep.nonzero().squeeze(1), held_idx
