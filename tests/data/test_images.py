"""The image sets' validation split (nestlearn.data.images.stratified_split)."""

import torch

from nestlearn.data.images import stratified_split


def test_split_holds_out_every_class_even_from_a_file_sorted_by_class():
    """The CIFAR-10 subset is stored class by class: a split taking the last 10% held out one class
    alone (and the model never saw it). The split takes the share from every class."""
    y = torch.arange(10).repeat_interleave(100)  # sorted by class, like the file
    rest, held = stratified_split(y, 0.1)
    assert torch.equal(torch.bincount(y[held], minlength=10), torch.full((10,), 10))
    assert torch.equal(torch.bincount(y[rest], minlength=10), torch.full((10,), 90))
    assert torch.equal(torch.cat([rest, held]).sort().values, torch.arange(1000))  # disjoint, complete
    again = stratified_split(y, 0.1)
    assert torch.equal(again[1], held) and not torch.equal(stratified_split(y, 0.1, seed=1)[1], held)
    assert not torch.equal(held, torch.arange(900, 1000))
