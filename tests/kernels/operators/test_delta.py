import torch

from mlip.kernels.operators.delta import DeltaActivation, delta_accumulate, fixed_point_quantize


def test_constant_sequence_gives_zero_deltas_after_frame_zero():
    x0 = torch.randn(3, 5, dtype=torch.float64)
    x = x0.expand(10, 3, 5)
    deltas, penalty = DeltaActivation(frac_bits=6)(x)
    q0 = torch.round(x0 * 64) / 64
    assert torch.equal(deltas[0], q0)
    assert torch.count_nonzero(deltas[1:]) == 0
    assert torch.allclose(penalty, q0.abs().sum() / x.numel())


def test_cumulative_sum_reconstructs_quantised_input():
    gen = torch.Generator().manual_seed(0)
    x = torch.cumsum(0.1 * torch.randn(50, 4, 8, generator=gen, dtype=torch.float64), dim=0)
    deltas, _ = DeltaActivation(frac_bits=5)(x)
    q = torch.round(x * 32) / 32
    # Sums of multiples of 2^-5 this small are exact in float64.
    assert torch.equal(delta_accumulate(deltas), q)
    # Consecutive deltas are the quantised differences.
    assert torch.equal(deltas[1:], q[1:] - q[:-1])


def test_linear_consumer_accumulates_to_w_times_q():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(20, 6, generator=gen, dtype=torch.float64)
    w = torch.randn(3, 6, generator=gen, dtype=torch.float64)
    deltas, _ = DeltaActivation(frac_bits=8)(x)
    expect = fixed_point_quantize(x, 8) @ w.T
    assert torch.allclose(delta_accumulate(deltas, w), expect, atol=1e-12)


def test_threshold_sparsifies_and_bounds_the_reconstruction_error():
    gen = torch.Generator().manual_seed(2)
    x = torch.cumsum(0.02 * torch.randn(200, 16, generator=gen, dtype=torch.float64), dim=0)
    theta = 0.1
    d0, _ = DeltaActivation(frac_bits=8)(x)
    d, _ = DeltaActivation(frac_bits=8, threshold=theta)(x)
    assert torch.count_nonzero(d) < 0.5 * torch.count_nonzero(d0)
    err = (delta_accumulate(d) - fixed_point_quantize(x, 8)).abs().max()
    assert err <= theta + 1e-12
    # Every transmitted delta exceeds the threshold.
    assert (d[d != 0].abs() > theta).all()


def test_straight_through_gradient_and_penalty_gradient():
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    deltas, penalty = DeltaActivation(frac_bits=4)(x)
    (delta_accumulate(deltas).sum() + penalty).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
