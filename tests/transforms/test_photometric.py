"""Batched colour augmentation against direct per-operation formulas."""

from __future__ import annotations

import torch

from lafslib.transforms.photometric import ColourAugment

W = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)


def _none(n: int) -> torch.Tensor:
    return torch.zeros(n)


def test_identity_and_single_operations() -> None:
    x = torch.rand(5, 3, 16, 16) * 0.5 + 0.25
    same = ColourAugment(0, 0, 0, 0, jitter_p=1.0, gray_p=0.0)(x, _none(5), _none(5))
    torch.testing.assert_close(same, x)
    torch.manual_seed(0)
    b = ColourAugment(0.4, 0, 0, 0, jitter_p=1.0, gray_p=0.0)
    out = b(x, _none(5), _none(5))
    ratio = out / x
    assert torch.allclose(
        ratio, ratio[:, :1, :1, :1].expand_as(ratio), atol=1e-5
    )  # one factor per view
    assert ((ratio[:, 0, 0, 0] - 1).abs() <= 0.4 + 1e-6).all()
    gray = ColourAugment(0, 0, 0, 0, jitter_p=0.0, gray_p=1.0)(x, _none(5), _none(5))
    torch.testing.assert_close(gray, (x * W).sum(1, keepdim=True).expand_as(x))


def test_hue_keeps_gray_and_luma_close() -> None:
    torch.manual_seed(1)
    g = torch.rand(3, 1, 8, 8).expand(3, 3, 8, 8).contiguous()
    hue = ColourAugment(0, 0, 0, 0.5, jitter_p=1.0, gray_p=0.0)
    torch.testing.assert_close(hue(g, _none(3), _none(3)), g, atol=1e-5, rtol=0)  # gray is hue-free
    x = torch.rand(3, 3, 8, 8) * 0.4 + 0.3
    y = hue(x, _none(3), _none(3))
    assert not torch.allclose(x, y)
    torch.testing.assert_close((y * W).sum(1), (x * W).sum(1), atol=0.02, rtol=0)  # YIQ keeps luma


def test_contrast_blends_towards_mean_luma() -> None:
    torch.manual_seed(2)
    x = torch.rand(4, 3, 8, 8) * 0.5 + 0.25
    out = ColourAugment(0, 0.4, 0, 0, jitter_p=1.0, gray_p=0.0)(x, _none(4), _none(4))
    mean = (x * W).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    c = (out - mean) / (x - mean)
    far = (x - mean).abs() > 1e-3  # away from the mean, where the ratio is well conditioned
    assert torch.allclose(c[far], c[:, :1, :1, :1].expand_as(c)[far], atol=1e-3)


def test_blur_and_solarize() -> None:
    x = torch.zeros(2, 3, 15, 15)
    x[:, :, 7, 7] = 1.0
    aug = ColourAugment(0, 0, 0, 0, jitter_p=0.0, gray_p=0.0, blur_sigma=(1.0, 1.0))
    y = aug(x, torch.tensor([1.0, 0.0]), _none(2))
    assert abs(y[0].sum().item() - 3.0) < 1e-4 and y[0, 0, 7, 7] < 0.5  # mass kept, spread out
    torch.testing.assert_close(y[1], x[1])  # p = 0: untouched
    z = aug(torch.full((2, 3, 4, 4), 0.8), _none(2), torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(z[0], torch.full((3, 4, 4), 0.2))
    torch.testing.assert_close(z[1], torch.full((3, 4, 4), 0.8))


def test_signed_output_is_the_same_augmentation() -> None:
    x = torch.rand(6, 3, 16, 16)
    p = torch.full((6,), 0.5)
    aug = ColourAugment()
    torch.manual_seed(4)
    a = aug(x.clone(), p, p)
    torch.manual_seed(4)
    b = aug(x.clone(), p, p, signed=True)
    torch.testing.assert_close(b, 2 * a - 1, atol=1e-5, rtol=0)


def test_strength_scales_the_colour_changes() -> None:
    torch.manual_seed(0)
    x = torch.rand(6, 3, 16, 16)
    none = torch.zeros(6)
    # strength 0: no jitter, no grayscale (blur and solarisation off here): the identity
    torch.testing.assert_close(ColourAugment.with_strength(0.0)(x, none, none), x)
    changes = []
    for s in (0.25, 1.0):
        torch.manual_seed(1)
        changes.append((ColourAugment.with_strength(s)(x, none, none) - x).abs().mean())
    assert 0 < changes[0] < changes[1]
    default, full = ColourAugment(), ColourAugment.with_strength(1.0)
    assert (default.brightness, default.hue, default.gray_p) == (
        full.brightness,
        full.hue,
        full.gray_p,
    )
