"""experiments/synthetic/probes/fuzzy_errors.py sorts fuzzy-recall answers by what each needed and bounds what any
model can score: its parse must find the suite's targets, its bound must be right by hand, and its "all answers"
accuracy must be the suite's."""

import dataclasses
import sys
from pathlib import Path

import pytest
import torch

from nestlearn.experiments import synthetic as S
from nestlearn.models import CausalLM

from .conftest import load_script

PROBE = Path(__file__).resolve().parents[2] / "experiments" / "synthetic" / "probes" / "fuzzy_errors.py"


@pytest.fixture(scope="module")
def probe():
    yield load_script(PROBE)
    while str(PROBE.parent) in sys.path:  # the probes put their folder on the path to import each other
        sys.path.remove(str(PROBE.parent))


def test_pairs_and_the_context_bound_by_hand(probe):
    # vocabulary 8: keys 1–8, values 9–16. Keys A = [3] → [9, 10], B = [3] → [11] (the same span), C = [4, 5] → [12]
    A, B, C = ([3], [9, 10]), ([3], [11]), ([4, 5], [12])
    seq = [*A[0], *A[1], *C[0], *C[1], *B[0], *B[1], *C[0], *C[1], *B[0], *B[1], *A[0], *A[1], 0, 0]
    assert probe.pairs_of(seq, 8) == [((3,), (9, 10), 0), ((4, 5), (12,), 3), ((3,), (11,), 6), ((4, 5), (12,), 8),
                                      ((3,), (11,), 11), ((3,), (9, 10), 13)]
    ids = torch.tensor([seq])
    targets = torch.full_like(ids, -100)
    # the generator's queries: C again (12 from token 9), B again (11 from token 11), A again (9 from token 13, 10
    # from token 14); B's first occurrence is no query although its span occurred before (keys go by index)
    targets[0, 9], targets[0, 11], targets[0, 13], targets[0, 14] = 12, 11, 9, 10
    t = probe.answer_table(ids, targets, vocab=8, chunk=12)
    # C: determined. B's and A's first tokens: A or B can be asking after span [3], equally likely however often
    # each occurred (B twice before A's query): 1/2 each. A's second token: after [3] and 9 only A: determined
    assert t["bound"].tolist() == [1.0, 0.5, 0.5, 1.0]
    assert t["first"].tolist() == [True, True, True, False]
    assert t["key_len"].tolist() == [2, 1, 1, 1]
    # the same answer's last occurrence: C's 12 at token 5 (now 10), B's 11 at 7 (now 12), A's at 1 and 2 (now 14, 15)
    assert t["dist"].tolist() == [5, 5, 13, 13]
    # chunks of 12 tokens: the queries at tokens 9 and 11 share chunk 0 with their earlier answers, 13 and 14 do not
    assert t["same_chunk"].tolist() == [True, True, False, False]
    # every earlier occurrence in the query's chunk: C's (token 5, query at 9) and B's (token 7, query at 11)
    assert t["only_chunk"].tolist() == [True, True, False, False]
    # chunks of 8: C's earlier answer (5) and query (9) in chunks 0 and 1; B's query at 11 and its answer at 7 too
    t8 = probe.answer_table(ids, targets, vocab=8, chunk=8)
    assert t8["same_chunk"].tolist() == [False, False, False, False]
    # C three times, chunks of 4 tokens: the third query (token 7) has its last answer in its chunk (token 5) and an
    # older one before it (token 2); the second (token 4) its one earlier answer in the chunk before
    ccc = torch.tensor([[4, 5, 12] * 3])
    tc = torch.full_like(ccc, -100)
    tc[0, 4], tc[0, 7] = 12, 12
    t4 = probe.answer_table(ccc, tc, vocab=8, chunk=4)
    assert t4["same_chunk"].tolist() == [False, True] and t4["only_chunk"].tolist() == [False, False]
    assert t4["dist"].tolist() == [3, 3]
    bad = targets.clone()
    bad[0, 14] = -100  # half of A's value scored
    with pytest.raises(AssertionError, match="differ from the suite's targets"):
        probe.answer_table(ids, bad, vocab=8)


def test_the_parse_finds_the_suites_targets_and_all_answers_score_as_the_suite(probe):
    recipe = dataclasses.replace(S.load_recipe(str(PROBE.parents[1] / "mad.yaml")), eval_batch_size=4)
    torch.manual_seed(0)
    model = CausalLM(S.model_config(recipe, probe.TASK, "transformer", None, None))
    res = probe.score(model, recipe, batches=2)
    with torch.no_grad():
        acc, _, _ = S._score(model, recipe, probe.TASK, "eval", [S._eval_seed(i) for i in range(2)])
    assert 100.0 * int(res["right"].sum()) / res["right"].numel() == pytest.approx(acc, abs=1e-9)
    assert 0.0 < float(res["bound"].mean()) <= 1.0
    lines = probe.report([("a", res), ("b", res)])
    assert lines[0].startswith(f"{res['right'].numel()} scored answers")
    assert any(line.startswith("| all answers |") for line in lines)


def test_the_test_time_changes_are_undone_and_refused_where_there_is_no_read(probe):
    recipe = dataclasses.replace(S.load_recipe(str(PROBE.parents[1] / "mad.yaml")), eval_batch_size=2)
    torch.manual_seed(0)
    model = CausalLM(S.model_config(recipe, probe.TASK, "hope", None, None))
    res = probe.score(model, recipe, batches=1)
    start = probe.score(model, recipe, batches=1, read="chunk_start")
    assert start["right"].shape == res["right"].shape
    assert all(m.cfg.read == "token" for m in probe.readable(model))
    assert torch.equal(probe.score(model, recipe, batches=1)["right"], res["right"])
    for kw in ({"cms_frozen": True}, {"memories_frozen": True}):  # test time only: undone after
        assert probe.score(model, recipe, batches=1, **kw)["right"].shape == res["right"].shape
        assert torch.equal(probe.score(model, recipe, batches=1)["right"], res["right"])
    transformer = CausalLM(S.model_config(recipe, probe.TASK, "transformer", None, None))
    with pytest.raises(ValueError, match="no read to change"):
        probe.score(transformer, recipe, batches=1, read="chunk_start")
