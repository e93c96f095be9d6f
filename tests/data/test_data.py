from pathlib import Path

import pytest
import torch

from nestlearn.data import associative_recall
from nestlearn.data.images import load_cifar10_subset, load_fashion_mnist
from nestlearn.models.vit import ViT, ViTConfig

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def test_associative_recall_answers_are_correct_by_construction():
    ids, targets = associative_recall(32, 5, 3, generator=torch.Generator().manual_seed(0))
    assert ids.shape == targets.shape == (32, 16)
    for row, tgt in zip(ids.tolist(), targets.tolist(), strict=True):
        pairs = dict(zip(row[0:10:2], row[1:10:2], strict=True))
        assert len(pairs) == 5  # distinct keys
        for j in range(10, 16, 2):
            assert tgt[j] == pairs[row[j]] == row[j + 1]
            assert tgt[j + 1] == -100
        assert all(t == -100 for t in tgt[:10])
    again, _ = associative_recall(32, 5, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(ids, again)
    with pytest.raises(ValueError, match="n_pairs"):
        associative_recall(1, 20, 1, n_keys=16)


@pytest.mark.skipif(not (DATA / "cifar10_subset").is_dir(), reason="../shared/data/cifar10_subset is absent")
def test_cifar10_subset_loads():
    x, y, xt, yt = load_cifar10_subset(DATA / "cifar10_subset")
    assert x.shape == (10000, 3, 32, 32) and xt.shape == (2000, 3, 32, 32)
    assert y.bincount().tolist() == [1000] * 10
    assert abs(x.mean().item()) < 1e-3 and abs(x.std().item() - 1) < 1e-2
    assert ViT(ViTConfig())(x[:2]).shape == (2, 10)


@pytest.mark.skipif(not (DATA / "fashion_mnist").is_dir(), reason="../shared/data/fashion_mnist is absent")
def test_fashion_mnist_loads():
    x, y, xt, yt = load_fashion_mnist(DATA / "fashion_mnist")
    assert x.shape == (10000, 1, 28, 28) and xt.shape == (10000, 1, 28, 28)
    assert int(y.max()) == 9 and yt.bincount().tolist() == [1000] * 10
    assert ViT(ViTConfig(image_size=28, channels=1))(x[:2]).shape == (2, 10)


def test_missing_image_folder_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar10_subset.npz"):
        load_cifar10_subset(tmp_path)
    with pytest.raises(FileNotFoundError, match="Fashion-MNIST file not found"):
        load_fashion_mnist(tmp_path)
