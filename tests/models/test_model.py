"""Ad-hoc stacking, ablation switches, configs and presets, bad input, state save/load."""

import warnings

import pytest
import torch
from torch.utils import _pytree as pytree

from nestlearn.layers import LevelConfig
from nestlearn.models import BLOCKS, PRESETS, CausalLM, apply_overrides, from_dict, preset, stack_levels

from .conftest import make_model


@pytest.mark.parametrize("variant", ["sequential", "nested"])
def test_stacking_with_zero_lr_reproduces_the_transformer(variant, ids):
    torch.manual_seed(0)
    src = CausalLM(preset("debug", block="transformer")).double()
    stacked = stack_levels(src, [LevelConfig(4, 0.0), LevelConfig(16, 0.0), LevelConfig(0)], variant=variant)
    with torch.no_grad():
        a, _, _ = src(ids)
        b, _, _ = stacked(ids)
        assert torch.equal(a, b)
        learning = stack_levels(src, [LevelConfig(4, 0.05), LevelConfig(16, 0.01)], variant=variant)
        c, _, _ = learning(ids)
    assert torch.allclose(a[:, :4], c[:, :4])  # before the first step the CMS is the source MLP
    assert not torch.allclose(a[:, 8:], c[:, 8:])  # after it, the levels have learned in context



@pytest.mark.parametrize("init", ["split", "copy"])
def test_stacking_split_and_copy_reproduce_the_transformer_and_every_level_learns(init, ids):
    """D29: the independent variant with levels made from the source MLP (its hidden units dealt out, or
    copies weighted 1/k) computes the source at lr 0; with lr > 0 every level moves at its first step."""
    torch.manual_seed(0)
    src = CausalLM(preset("debug", block="transformer", mlp_mult=4.0)).double()
    stacked = stack_levels(src, [LevelConfig(4, 0.0), LevelConfig(8, 0.0)], init=init)
    assert stacked.blocks[0].mlp.cfg.variant == "independent"
    width = stacked.blocks[0].mlp.levels[0].w_gate.shape[1]
    assert width == (64 if init == "split" else 128)
    with torch.no_grad():
        a, _, _ = src(ids)
        torch.testing.assert_close(stacked(ids)[0], a, rtol=0, atol=1e-12)
        learning = stack_levels(src, [LevelConfig(4, 0.05), LevelConfig(8, 0.05)], init=init)
        _, _, state = learning(ids[:, :9])
    for i in range(2):  # both levels stepped by token 8, from their stacked start
        moved = state.blocks[0].mlp.weights[i][0] - learning.blocks[0].mlp.levels[i].w_gate
        assert moved.abs().max() > 1e-6
    with pytest.raises(ValueError, match="needs cms variant 'independent'"):
        stack_levels(src, [LevelConfig(4, 0.0)], variant="sequential", init="split")
    with pytest.raises(ValueError, match="init must be one of"):
        stack_levels(src, [LevelConfig(4, 0.0)], init="random")


def test_per_layer_cms_levels(ids):
    from nestlearn.layers import CMSConfig

    layer_cms = [CMSConfig(levels=[LevelConfig(4, 0.01)]),
                 CMSConfig(levels=[LevelConfig(8, 0.01), LevelConfig(16, 0.0)])]
    model = CausalLM(preset("debug", block="hope_attention", layer_cms=layer_cms))
    assert [[lv.chunk_size for lv in b.mlp.cfg.levels] for b in model.blocks] == [[4], [8, 16]]
    assert model.segment == 4
    _, _, state = model(ids)
    assert len(state.blocks[1].mlp.weights) == 2 and state.blocks[1].mlp.weights[1] is None  # lr 0: frozen
    with pytest.raises(ValueError, match="one CMS section per layer"):
        preset("debug", block="hope_attention", layer_cms=layer_cms[:1])
    with pytest.raises(ValueError, match=r"multiple of the model's smallest one \(4\)"):
        preset("debug", block="hope_attention", layer_cms=[layer_cms[0], CMSConfig(levels=[LevelConfig(6, 0.01)])])
    with pytest.raises(ValueError, match=r"model.layer_cms\[1\]: cms.levels\[0\].lr must be"):
        preset("debug", block="hope_attention", layer_cms=[layer_cms[0], CMSConfig(levels=[LevelConfig(8, -1.0)])])


def test_rope_base_and_norm_eps_reach_the_modules():
    model = CausalLM(preset("debug", block="transformer", rope_base=5e5, norm_eps=1e-5))
    assert model.blocks[0].mixer.rope_base == 5e5
    assert {m.eps for m in model.modules() if type(m).__name__ == "RMSNorm"} == {1e-5}

ABLATIONS = {  # NL Table 6 rows
    "w/o DGD": {"selfmod.rule": "gd"},
    "w/o momentum": {"selfmod.momentum": False},
    "w/o weight decay": {"selfmod.weight_decay": False},
    "w/o inner-projection k": {"selfmod.adaptive_k": False},
    "w/o inner-projection v": {"selfmod.adaptive_v": False},
    "adaptive q": {"selfmod.adaptive_q": True},
    "w/o CMS learning": {"cms.levels.0.lr": 0.0, "cms.levels.1.lr": 0.0},
}


@pytest.mark.parametrize("name", ABLATIONS)
def test_each_ablation_changes_the_computation(name, ids):
    base = make_model("hope")
    ablated = make_model("hope", **ABLATIONS[name])
    # share every parameter the two have in common, so only the switch differs
    own = ablated.state_dict()
    ablated.load_state_dict({k: v for k, v in base.state_dict().items() if k in own and own[k].shape == v.shape},
                            strict=False)
    with torch.no_grad():
        a, _, _ = base(ids)
        b, _, _ = ablated(ids)
    assert torch.isfinite(b).all()
    assert not torch.allclose(a, b, atol=1e-6)
    gap = (a - b).abs().amax(-1).amax(0)  # per position
    # where the switch starts to matter: the first CMS step (token 4: level 0's chunk); the second write
    # (the first has no past momentum); otherwise the first token's write
    start = {"w/o CMS learning": 4, "w/o momentum": 1}.get(name, 0)
    assert (gap[:start] < 1e-12).all() and (gap[start:] > 1e-4).all(), (name, gap)


@pytest.mark.parametrize("name", PRESETS)
def test_presets_build_for_every_block(name, capsys):
    sizes = {}
    for block in BLOCKS:
        cfg = preset(name, block=block)
        if name.startswith("hope-"):  # paper-shaped: count parameters without allocating them
            with torch.device("meta"):
                sizes[block] = CausalLM(cfg).num_parameters()
        else:
            sizes[block] = CausalLM(cfg).num_parameters()
    print(f"\n{name}: " + ", ".join(f"{b} {n / 1e6:.2f}M" for b, n in sizes.items()))
    if name == "small":
        assert 5e6 < sizes["transformer"] < 20e6
    if name == "hope-760m":
        assert 0.5e9 < sizes["hope"] < 1.1e9
    if name == "hope-1.3b":
        assert 1.0e9 < sizes["hope"] < 1.8e9


def test_config_overrides_and_unknown_keys():
    cfg = preset("debug", block="hope", **{"selfmod.rule": "gd", "cms.levels.1.lr": 0.0, "dim": 48})
    assert cfg.selfmod.rule == "gd" and cfg.cms.levels[1].lr == 0.0 and cfg.dim == 48
    with pytest.raises(ValueError, match="unknown config key 'model.selfmod.rul'"):
        apply_overrides(cfg, {"selfmod.rul": "gd"})
    with pytest.raises(ValueError, match=r"unknown config key 'model.cms.levels.0.lrr'"):
        from_dict({"cms": {"levels": [{"lrr": 1}]}})
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")
    with pytest.raises(ValueError, match=r"cms.levels\[1\].chunk_size must be a positive multiple of "
                                         r"cms.levels\[0\].chunk_size \(got 48 after 32\)"):
        preset("debug", **{"cms.levels.0.chunk_size": 32, "cms.levels.1.chunk_size": 48})
    with pytest.raises(ValueError, match="model.block must be one of"):
        preset("debug", block="mamba")


@pytest.mark.parametrize("block", BLOCKS)
def test_bad_input(block):
    model = make_model(block)
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 256\)"):
        model(torch.tensor([[1, 2, 256]]))
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 256\)"):
        model(torch.tensor([[-1, 2]]))
    with pytest.raises(ValueError, match="ids is empty"):
        model(torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="ids must be a LongTensor"):
        model(torch.zeros(1, 3))
    _, _, state = model(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="state was made for batch size 2 but ids has batch size 1"):
        model(torch.zeros(1, 3, dtype=torch.long), state=state)
    with pytest.raises(ValueError, match="state does not belong to this model"):
        model(torch.zeros(2, 3, dtype=torch.long), state=(1, 2))
    with pytest.raises(ValueError, match="targets must have the shape of ids"):
        model(torch.zeros(2, 3, dtype=torch.long), targets=torch.zeros(2, 2, dtype=torch.long))


@pytest.mark.parametrize("block", ["transformer", "hope_attention", "titans_mag"])
def test_attention_positional_limit(block):
    model = make_model(block, max_seq_len=16)
    model(torch.zeros(1, 16, dtype=torch.long))
    with pytest.raises(ValueError, match="past the attention's positional limit max_seq_len=16"):
        model(torch.zeros(1, 17, dtype=torch.long))
    _, _, state = model(torch.zeros(1, 10, dtype=torch.long))
    with pytest.raises(ValueError, match="max_seq_len=16"):
        model(torch.zeros(1, 10, dtype=torch.long), state=state)


@pytest.mark.parametrize("block", BLOCKS)
def test_save_and_load_state_round_trip(block, ids, tmp_path):
    model = make_model(block)
    with torch.no_grad():
        _, _, state = model(ids[:, :13])
        model.save_state(state, tmp_path / "mem.safetensors")
        loaded = model.load_state(tmp_path / "mem.safetensors")
        saved = state._replace(cursor=None)  # the inference cursor is not saved: the next call replays
        a, _, _ = model(ids[:, 13:], state=saved)
        b, _, _ = model(ids[:, 13:], state=loaded)
        c, _, _ = model(ids[:, 13:], state=state)  # from the cursor, where the model has one
    for x, y in zip(pytree.tree_leaves(saved), pytree.tree_leaves(loaded), strict=True):
        assert torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y
    # bitwise: the loaded tensors own fresh (aligned) storage, so both calls run the same BLAS paths
    assert torch.equal(a, b)
    assert torch.allclose(a, c, atol=1e-10, rtol=1e-9)
    assert not (tmp_path / "mem.safetensors.tmp").exists()
    with pytest.raises(ValueError, match="state file not found"):
        model.load_state(tmp_path / "nope.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(ValueError, match="not a readable nestlearn state file"):
        model.load_state(tmp_path / "bad.safetensors")


def test_persistent_levels_keep_what_they_learned(ids):
    model = make_model("hope_attention", **{"cms.levels.1.reset": "persistent"})
    with torch.no_grad():
        _, _, state = model(ids)
        nxt = model.new_sequence_state(state)
    fresh = model.init_state(2)
    cms_new, cms_old, cms_fresh = nxt.blocks[0].mlp, state.blocks[0].mlp, fresh.blocks[0].mlp
    assert torch.equal(cms_new.weights[0][0], cms_fresh.weights[0][0])  # level 0 resets per sequence
    assert torch.equal(cms_new.weights[1][0], cms_old.weights[1][0])  # level 1 is persistent
    assert nxt.pos == 0 and nxt.pending.shape[1] == 0


def test_a_cms_level_that_never_steps_is_named():
    model = make_model("hope_attention")  # levels of 4 and 8 tokens
    ids = torch.randint(0, 256, (2, 8))
    with pytest.warns(RuntimeWarning, match=r"cms.levels\[1\] \(chunk_size=8\) never steps inside sequences of 8"):
        model(ids, targets=ids)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model(ids, targets=ids)  # said once
        model(torch.randint(0, 256, (2, 9)), targets=torch.randint(0, 256, (2, 9)))  # steps at 8 < 9


@pytest.mark.parametrize("block", sorted(BLOCKS))
def test_every_block_kind_runs_in_bfloat16(block, ids):
    """bfloat16 weights (a model loaded with dtype=torch.bfloat16): the triangular solve of the UT transform
    runs in float32 (PyTorch has none for half precision); logits within bfloat16's precision of float32's,
    and the backward runs."""
    torch.manual_seed(0)
    model = CausalLM(preset("debug", block=block))
    with torch.no_grad():
        ref = model(ids)[0]
    model = model.to(torch.bfloat16)
    logits, loss, _ = model(ids, targets=ids)
    assert logits.dtype == torch.bfloat16
    assert ((logits.float() - ref).norm() / ref.norm()).item() < 0.06
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("block", sorted(BLOCKS))
def test_every_block_kind_trains_under_bfloat16_autocast(block, ids):
    """The Trainer trains under bfloat16 autocast on a GPU; CPU autocast runs the same dtype rules. The
    memories cast their inputs up to the state's dtype and run without autocast (before, every recurrent
    block stopped with a dtype error), and the CMS steps its fast weights in their own dtype: the state
    stays float32, the loss within 0.5% of float32's, the backward finite."""
    torch.manual_seed(0)
    model = CausalLM(preset("debug", block=block))
    _, ref, _ = model(ids, targets=ids)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, loss, state = model(ids, targets=ids)
    assert logits.dtype == torch.bfloat16
    dtypes = {t.dtype for t in pytree.tree_leaves(state) if isinstance(t, torch.Tensor) and t.is_floating_point()}
    assert dtypes == {torch.float32}
    assert abs(loss.item() - ref.item()) < 5e-3 * ref.item()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
