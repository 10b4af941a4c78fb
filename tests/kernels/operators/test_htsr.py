import torch
from torch import nn

from mlip.kernels.operators.htsr import htsr_alpha, htsr_report, power_law_fit


def pareto(n, alpha, xmin, gen):
    # Inverse CDF of p(x) = (alpha - 1) / xmin (x / xmin)^(-alpha), x >= xmin.
    u = torch.rand(n, generator=gen, dtype=torch.float64)
    return xmin * u ** (-1.0 / (alpha - 1.0))


def test_pareto_samples_with_alpha_3():
    for seed in range(3):
        fit = power_law_fit(pareto(10_000, 3.0, 1.0, torch.Generator().manual_seed(seed)))
        assert abs(fit.alpha - 3.0) < 0.1, fit
        assert fit.heavy_tailed


def test_ks_choice_of_xmin_skips_a_non_power_law_body():
    gen = torch.Generator().manual_seed(5)
    body = 0.5 + 4.5 * torch.rand(4000, generator=gen, dtype=torch.float64)  # uniform on [0.5, 5)
    tail = pareto(8000, 3.0, 5.0, gen)
    fit = power_law_fit(torch.cat([body, tail]))
    assert abs(fit.alpha - 3.0) < 0.1, fit
    assert 4.5 < fit.xmin < 6.5 and fit.n_tail < 8500
    # Hill's estimator from the smallest sample is badly off here, so the KS step matters.
    x = torch.cat([body, tail])
    naive = 1 + x.numel() / torch.log(x / x.min()).sum().item()
    assert abs(naive - 3.0) > 0.5


def test_gaussian_matrix_has_no_heavy_tail():
    w = torch.randn(1000, 500, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    fit = htsr_alpha(w)
    assert fit.alpha > 6 and not fit.heavy_tailed, fit
    assert fit.n == 500


def test_matrix_with_pareto_entries_is_heavy_tailed():
    # Martin & Mahoney: entries with tail index mu < 2 give an ESD tail exponent 1 + mu / 2.
    gen = torch.Generator().manual_seed(0)
    mu = 1.0
    w = torch.rand(1000, 500, generator=gen, dtype=torch.float64) ** (-1 / mu)
    w = w * torch.sign(torch.randn(1000, 500, generator=gen, dtype=torch.float64))
    fit = htsr_alpha(w)
    assert fit.heavy_tailed and abs(fit.alpha - (1 + mu / 2)) < 0.2, fit


def test_report_covers_every_2d_weight_of_a_module():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(300, 600), nn.ReLU(), nn.Linear(600, 200), nn.Linear(200, 5))
    report = htsr_report(net)
    assert set(report) == {"0.weight", "2.weight"}  # biases and the 5-row matrix are skipped
    assert report["0.weight"].n == 300 and report["2.weight"].n == 200
    assert all(not fit.heavy_tailed for fit in report.values())
