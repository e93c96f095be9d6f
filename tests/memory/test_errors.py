"""Bad input gets a ValueError that names the argument and the expected shape."""

import pytest
import torch

from nestlearn.memory import LinearMemory, MLPMemory

from .conftest import make_inputs, make_memory


@pytest.fixture
def setup():
    mem = make_memory("linear", "dgd", 4)
    k, v, eta, alpha, _ = make_inputs(mem, T=5)
    return mem, mem.init_state(2), k, v, eta, alpha


def test_mismatched_key_shape(setup):
    mem, s, k, v, eta, alpha = setup
    with pytest.raises(ValueError, match=r"k must be \[B, T, H, D\] = \[2, T, 2, 6\]"):
        mem.write(s, k[..., :5], v, eta)
    with pytest.raises(ValueError, match=r"k must be .* \(got \[2, 5, 6\]\)"):
        mem.write(s, k[:, :, 0], v, eta)
    with pytest.raises(ValueError, match=r"k must be .*\[2, T, 2, 6\]"):
        mem.write(s, k[:1], v[:1], eta[:1])


def test_value_length_differs_from_keys(setup):
    mem, s, k, v, eta, alpha = setup
    with pytest.raises(ValueError, match=r"v must be \[B, T, H, 6\] = \[2, 5, 2, 6\] like k"):
        mem.write(s, k, v[:, :4], eta)


def test_gate_shapes(setup):
    mem, s, k, v, eta, alpha = setup
    with pytest.raises(ValueError, match=r"lr must be \[B, T, H\] = \[2, 5, 2\]"):
        mem.write(s, k, v, eta[..., :1])
    with pytest.raises(ValueError, match=r"decay must be \[B, T, H\]"):
        mem.write(s, k, v, eta, alpha[:, :3])


def test_empty_sequence(setup):
    mem, s, k, v, eta, alpha = setup
    with pytest.raises(ValueError, match="T = 0"):
        mem.write(s, k[:, :0], v[:, :0], eta[:, :0])
    with pytest.raises(ValueError, match="T = 0"):
        mem.read(s, k[:, :0])


def test_dtype_mismatch(setup):
    mem, s, k, v, eta, alpha = setup
    with pytest.raises(ValueError, match="k has dtype torch.float32 but the memory state is torch.float64"):
        mem.write(s, k.float(), v, eta)
    with pytest.raises(ValueError, match="lr has dtype torch.float32"):
        mem.write(s, k, v, eta.float())


def test_device_mismatch(setup):
    mem, s, k, v, eta, alpha = setup
    meta = k.to("meta")
    with pytest.raises(ValueError, match="k is on meta but the memory state is on cpu"):
        mem.write(s, meta, v, eta)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_lr(setup, bad):
    mem, s, k, v, eta, alpha = setup
    eta = eta.clone()
    eta[1, 3, 0] = bad
    with pytest.raises(ValueError, match="lr contains NaN or inf"):
        mem.write(s, k, v, eta)
    with pytest.raises(ValueError, match="lr must be finite"):
        mem.write(s, k, v, bad)
    with pytest.raises(ValueError, match="decay contains NaN or inf"):
        mem.write(s, k, v, 0.1, decay=eta)


def test_momentum_gate_must_match_the_memory(setup):
    mem, s, k, v, eta, alpha = setup
    with pytest.raises(ValueError, match="momentum=False"):
        mem.write(s, k, v, eta, momentum=alpha)
    mm = make_memory("linear", "dgd", 4, momentum=True)
    with pytest.raises(ValueError, match=r"pass momentum=\[B, T, H\]"):
        mm.write(mm.init_state(2), k, v, eta)


def test_state_from_another_memory(setup):
    mem, s, k, v, eta, alpha = setup
    other = LinearMemory(2, 6, 4).double()
    with pytest.raises(ValueError, match="state weights must be"):
        mem.write(other.init_state(2), k, v, eta)
    with pytest.raises(ValueError, match="state must be a MemoryState"):
        mem.write({"weights": 1}, k, v, eta)


def test_bad_construction():
    with pytest.raises(ValueError, match="rule must be one of"):
        LinearMemory(1, 4, 4, rule="sgd")
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        LinearMemory(1, 4, 4, chunk_size=0)
    with pytest.raises(ValueError, match="needs objective='l2'"):
        LinearMemory(1, 4, 4, rule="delta", objective="dot")
    with pytest.raises(ValueError, match="activation must be one of"):
        MLPMemory(1, 4, 8, activation="relu6")
    with pytest.raises(ValueError, match="impl must be"):
        m = LinearMemory(1, 4, 4)
        m.write(m.init_state(1), torch.zeros(1, 1, 1, 4), torch.zeros(1, 1, 1, 4), 0.1, impl="fast")
