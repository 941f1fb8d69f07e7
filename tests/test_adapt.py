"""Domain adaptation, fine-tuning regularisers and label-free scores: the pure pieces."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from vt_models.eval.unsupervised import (
    deep_embedded_validation,
    dev_risk,
    domain_density_ratio,
    information_maximisation,
    label_free_scores,
    soft_neighbourhood_density,
)
from vt_models.train.adapt import DomainAlignment, coral, mmd, ramp, reverse_gradient
from vt_models.train.regularise import StartingPoint, batch_spectral_shrinkage


def test_gradient_reversal_is_identity_forward_and_flips_the_gradient() -> None:
    x = torch.randn(5, 3, requires_grad=True)
    w = torch.randn(5, 3)
    y = reverse_gradient(x, 0.5)
    assert torch.equal(y, x)
    (y * w).sum().backward()
    assert torch.allclose(x.grad, -0.5 * w)


def test_ramp_goes_from_zero_to_one() -> None:
    values = [ramp(p) for p in np.linspace(0, 1, 11)]
    assert values[0] == 0.0 and values[-1] > 0.999
    assert all(a < b for a, b in zip(values, values[1:], strict=False))
    assert ramp(0.0, gamma=0) == 1.0  # no ramp: full weight from the first step


def test_mmd_is_zero_for_identical_batches_and_grows_with_the_shift() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 16, generator=g)
    same_distribution = torch.randn(24, 16, generator=g)  # other samples, other batch size
    assert mmd(x, x).abs() < 1e-6
    small, large = mmd(x, x + 0.5).item(), mmd(x, x + 2.0).item()
    assert 0 < small < large
    assert mmd(x, same_distribution).item() < small


def test_coral_is_zero_for_identical_batches_and_positive_for_other_covariances() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 16, generator=g)
    assert coral(x, x).abs() < 1e-9
    assert coral(x, x + 3.0).abs() < 1e-6  # second-order statistics only: a mean shift is invisible to CORAL
    assert coral(x, 2.0 * x + 1.0).item() > 0.01
    with pytest.raises(ValueError, match="at least 2 clips"):
        coral(x[:1], x)


def test_unknown_method_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown adaptation method 'adda'; choices: none, dann, mmd, coral"):
        DomainAlignment("adda", 8)


def test_dann_domain_head_learns_to_tell_shifted_domains_apart() -> None:
    torch.manual_seed(0)
    align = DomainAlignment("dann", 8)
    opt = torch.optim.Adam(align.parameters(), lr=1e-2)
    source, target = torch.randn(32, 8), torch.randn(32, 8) + 1.5
    first = None
    for _ in range(60):
        loss, logged = align(source, target, coeff=1.0)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first and logged["domain_accuracy"] > 0.8


def test_dann_sends_the_encoder_the_reversed_and_ramped_gradient() -> None:
    torch.manual_seed(0)
    align = DomainAlignment("dann", 4).eval()  # no dropout: both passes see the same head
    feats = torch.randn(8, 4, requires_grad=True)
    loss, _ = align(feats[:4], feats[4:], coeff=1.0)
    (plain,) = torch.autograd.grad(loss, feats, retain_graph=True)
    # the same loss without reversal: the gradient the domain head's objective would send
    logits = align.domain_head(feats)
    straight = nn.functional.binary_cross_entropy_with_logits(logits, torch.tensor([0.0] * 4 + [1.0] * 4))
    (forward,) = torch.autograd.grad(straight, feats)
    assert torch.allclose(plain, -forward, atol=1e-6)
    half, _ = align(feats[:4], feats[4:], coeff=0.25)
    (ramped,) = torch.autograd.grad(half, feats)
    assert torch.allclose(ramped, -0.25 * forward, atol=1e-6)


def test_l2sp_pulls_toward_the_start_not_toward_zero() -> None:
    torch.manual_seed(0)
    model = nn.Sequential()
    model.encoder = nn.Linear(6, 6)
    model.head = nn.Linear(6, 2)
    with torch.no_grad():
        model.encoder.weight.add_(3.0)  # far from zero: decay toward zero and toward the start differ
    start = model.encoder.weight.detach().clone()
    sp = StartingPoint(model, ("encoder.",), alpha=1.0)
    assert sp.names == ["encoder.weight", "encoder.bias"]  # the head is not held
    assert sp.penalty().item() == 0.0
    with torch.no_grad():
        model.encoder.weight.add_(torch.randn(6, 6))
    moved = sp.distance()
    assert moved > 1.0 and sp.penalty().item() == pytest.approx(0.5 * moved**2, rel=1e-5)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(100):
        opt.zero_grad()
        sp.penalty().backward()
        opt.step()
    assert sp.distance() < 1e-3 * moved
    assert torch.allclose(model.encoder.weight, start, atol=1e-2)
    assert model.head.weight.grad is None  # untouched by the penalty
    with pytest.raises(ValueError, match="no trainable parameters under"):
        StartingPoint(model, ("backbone.",), alpha=1.0)


def test_batch_spectral_shrinkage_is_the_smallest_squared_singular_values() -> None:
    feats = torch.diag(torch.tensor([3.0, 2.0, 0.5]))
    assert batch_spectral_shrinkage(feats, 1).item() == pytest.approx(0.25)
    assert batch_spectral_shrinkage(feats, 2).item() == pytest.approx(4.25)
    rank_one = torch.outer(torch.arange(1.0, 5.0), torch.ones(3))
    assert batch_spectral_shrinkage(rank_one, 1).item() < 1e-8


def test_information_maximisation_prefers_confident_and_diverse_predictions() -> None:
    k = 4
    uniform = np.full((12, k), 1 / k)
    collapsed = np.tile(np.eye(k)[0], (12, 1))  # confident, but one class for everything
    perfect = np.eye(k)[np.arange(12) % k]
    assert information_maximisation(uniform) == pytest.approx(0.0, abs=1e-9)
    assert information_maximisation(collapsed) == pytest.approx(0.0, abs=1e-9)
    assert information_maximisation(perfect) == pytest.approx(math.log(k))


def test_soft_neighbourhood_density_as_pytorch_adapt_defines_it() -> None:
    """The entropy of each video's softmax over its similarities to the *other* videos (T = 0.05): a video
    among m - 1 identical neighbours and far from the rest scores log(m - 1); the same prediction
    everywhere scores log(n - 1), the most (why IM, not SND, picks the model)."""
    rng = np.random.default_rng(0)
    clustered = np.eye(3)[np.arange(30) % 3]  # three clusters of 10
    scattered = rng.dirichlet(np.ones(3), size=30)
    collapsed = np.tile([0.5, 0.3, 0.2], (30, 1))
    assert soft_neighbourhood_density(clustered) == pytest.approx(math.log(9), abs=1e-6)
    assert soft_neighbourhood_density(collapsed) == pytest.approx(math.log(29), abs=1e-9)
    assert math.log(3) < soft_neighbourhood_density(scattered) < math.log(29)
    assert set(label_free_scores(clustered)) == {"im", "snd"}
    # one video: no neighbours for SND, and IM is 0 whatever the model (an adaptation run still logs it)
    assert label_free_scores(clustered[:1]) == {"im": 0.0}
    with pytest.raises(ValueError, match="at least 2"):
        soft_neighbourhood_density(clustered[:1])


def test_dev_risk_is_the_weighted_loss_with_the_papers_control_variate() -> None:
    rng = np.random.default_rng(0)
    losses = rng.uniform(0, 2, 50)
    # equal weights: no shift, the plain mean loss
    assert dev_risk(np.ones(50), losses) == pytest.approx(losses.mean())
    w = rng.uniform(0.2, 3, 50)
    wl = w * losses
    eta = -np.cov(wl, w)[0, 1] / np.var(w, ddof=1)
    assert dev_risk(w, losses) == pytest.approx(wl.mean() + eta * w.mean() - eta)
    with pytest.raises(ValueError, match="one weight per loss"):
        dev_risk(w[:3], losses)


def test_dev_weights_the_source_videos_that_look_like_the_target() -> None:
    """Source features in two clusters, the target in one of them: the density ratio is high there and low
    in the other, so DEV charges a model for its errors where the target lies and forgives those elsewhere."""
    rng = np.random.default_rng(1)
    near = rng.normal(0, 1, (60, 8))
    far = rng.normal(0, 1, (60, 8)) + np.r_[6.0, np.zeros(7)]
    source_train, source_val = np.concatenate([near, far]), np.concatenate([near, far]) + rng.normal(0, 0.1, (120, 8))
    target = rng.normal(0, 1, (50, 8))
    ratio = domain_density_ratio(source_train, target, source_val)
    assert ratio[:60].mean() > 5 * ratio[60:].mean()
    wrong_near = np.r_[np.full(60, 2.0), np.full(60, 0.1)]  # errs on the target-like videos
    wrong_far = wrong_near[::-1].copy()  # the same mean loss, its errors where no target video is
    assert wrong_near.mean() == pytest.approx(wrong_far.mean())
    assert deep_embedded_validation(source_train, source_val, wrong_near, target) > deep_embedded_validation(
        source_train, source_val, wrong_far, target
    )
    with pytest.raises(ValueError, match="at least 5"):
        domain_density_ratio(source_train, target[:3], source_val)
