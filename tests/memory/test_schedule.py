"""The chunk schedule on its own: pieces end at every boundary of every clock and nowhere else."""

import pytest

from nestlearn.memory.schedule import slices, spans, spans_at


def boundaries(length, sizes, offsets):
    """Cut points written independently: every token index where some clock starts a new chunk."""
    return sorted({t for t in range(1, length) for c, o in zip(sizes, offsets, strict=True) if (o + t) % c == 0})


@pytest.mark.parametrize("length, sizes, offsets", [
    (20, [8], [0]), (20, [8], [5]), (7, [8], [3]), (30, [8, 12], [0, 0]), (30, [4, 6], [3, 1]), (1, [1], [0]),
    (0, [4], [2]),
])
def test_pieces_end_exactly_at_every_chunk_boundary(length, sizes, offsets):
    out = spans(length, sizes, offsets)
    assert sum(out) == length and all(n >= 1 for n in out)
    cuts = [s.stop for s in slices(out)][:-1]
    assert cuts == boundaries(length, sizes, offsets)


def test_absolute_positions_and_named_cases():
    assert spans_at(0, 20, 8) == [8, 8, 4]
    assert spans_at(13, 20, 8) == [3, 8, 8, 1]  # finish the chunk that position 13 is in first
    assert spans_at(0, 12, 8, 6) == [6, 2, 4]  # two clocks: cut at 6, 8 and 12
    assert [(s.start, s.stop) for s in slices([3, 8, 1])] == [(0, 3), (3, 11), (11, 12)]


@pytest.mark.parametrize("args, message", [
    ((-1, [4], [0]), "length must be"), ((4, [4], [4]), "offset"), ((4, [0], [0]), "chunk size"),
    ((4, [4, 2], [0]), "one offset per chunk size"),
])
def test_bad_schedules_are_named(args, message):
    with pytest.raises(ValueError, match=message):
        spans(*args)
