import math

import pytest
import torch
import torch.nn.functional as F

from mlip.kernels.operators.generalized_conv import GeneralizedConv2d


def brute_force(layer, x):
    k, s, p = layer.kernel_size, layer.stride, layer.padding
    xp = F.pad(x, (p, p, p, p))
    b, _, h, w = xp.shape
    h_out, w_out = (h - k) // s + 1, (w - k) // s + 1
    out = torch.empty(b, layer.out_channels, h_out, w_out, dtype=x.dtype)
    for n in range(b):
        for o in range(layer.out_channels):
            wo = layer.weight[o]
            for i in range(h_out):
                for j in range(w_out):
                    patch = xp[n, :, i * s : i * s + k, j * s : j * s + k]
                    if layer.similarity == "dot":
                        v = (wo * patch).sum()
                    elif layer.similarity == "polynomial":
                        v = ((wo * patch).sum() + layer.offset) ** layer.degree
                    elif layer.similarity == "gaussian":
                        v = math.exp(-layer.gamma * ((wo - patch) ** 2).sum().item())
                    elif layer.similarity == "l1":
                        v = -(layer.distance_weight[o] * (wo - patch).abs()).sum()
                    else:
                        v = -(layer.distance_weight[o] * (wo - patch) ** 2).sum()
                    out[n, o, i, j] = v + (layer.bias[o] if layer.bias is not None else 0)
    return out


@pytest.mark.parametrize("similarity", ["dot", "polynomial", "gaussian", "l1", "l2"])
@pytest.mark.parametrize("stride,padding", [(1, 0), (2, 1)])
def test_equals_brute_force_patch_evaluation(similarity, stride, padding):
    torch.manual_seed(0)
    layer = GeneralizedConv2d(
        2, 3, 3, stride=stride, padding=padding, similarity=similarity, degree=3, offset=0.5, gamma=0.3,
        bias=True, dtype=torch.float64,
    )
    with torch.no_grad():
        layer.bias.normal_()
        if layer.distance_weight is not None:
            layer.distance_weight.uniform_(0.1, 2.0)
    x = torch.randn(2, 2, 7, 6, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(layer(x), brute_force(layer, x), atol=1e-12)


def test_dot_similarity_is_conv2d():
    torch.manual_seed(1)
    layer = GeneralizedConv2d(3, 4, 3, stride=2, padding=1, dtype=torch.float64)
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    assert torch.allclose(layer(x), F.conv2d(x, layer.weight, stride=2, padding=1), atol=1e-12)


def test_l1_at_identical_patch_is_zero_and_maximal():
    layer = GeneralizedConv2d(1, 1, 2, similarity="l1", dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]]))
    x = torch.tensor([[[[1.0, 2.0, 0.0], [3.0, 4.0, 0.0]]]], dtype=torch.float64)
    out = layer(x)[0, 0, 0]
    assert out[0] == 0 and out[1] == -(1 + 2 + 1 + 4)
