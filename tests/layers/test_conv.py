"""The short causal convolution (nestlearn/modules/conv.py): the shifted-sum fast path against the grouped
``conv1d`` reference, values and gradients; pieces with the carried state equal one call."""

import pytest
import torch

from nestlearn.modules.conv import ShortConv, causal_conv


@pytest.mark.parametrize("width", [1, 2, 4])
@pytest.mark.parametrize("T", [1, 5, 17])
def test_shifted_sum_equals_the_grouped_conv_reference(width, T):
    g = torch.Generator().manual_seed(width * 100 + T)
    xx = torch.randn(3, width - 1 + T, 6, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(6, width, dtype=torch.float64, generator=g, requires_grad=True)
    up = torch.randn(3, T, 6, dtype=torch.float64, generator=g)
    out = {}
    for impl in ("shift", "reference"):
        y = causal_conv(xx, w, impl)
        gx, gw = torch.autograd.grad((y * up).sum(), (xx, w))
        out[impl] = (y, gx, gw)
    for a, b in zip(out["shift"], out["reference"], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_pieces_with_the_carried_state_equal_one_call_and_a_bad_impl_is_named():
    torch.manual_seed(0)
    conv = ShortConv(8, 4).double()
    x = torch.randn(2, 11, 8, dtype=torch.float64)
    whole, _ = conv(x)
    a, state = conv(x[:, :4])
    b, _ = conv(x[:, 4:], state)
    torch.testing.assert_close(torch.cat([a, b], 1), whole, rtol=0, atol=1e-14)
    torch.testing.assert_close(conv(x, impl="reference")[0], whole, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="impl must be 'shift' or 'reference'"):
        conv(x, impl="fast")
