"""Part fViT: end-to-end gradients into the landmark CNN, frozen landmarks, token centres, export."""

from __future__ import annotations

import torch

from lafslib.layers.patch_sampling import grid_centers
from lafslib.models import create_model, load_export, save_export
from lafslib.models.part_fvit import PartFViT, release_coord_range


def test_embedding_and_exposed_landmarks():
    model = create_model("part_fvit_test").eval()
    x = torch.randn(2, 3, 112, 112)
    emb = model(x)
    assert emb.shape == (2, model.embed_dim)
    torch.testing.assert_close(model.last_landmarks, model.predict_landmarks(x))
    lo, hi = release_coord_range(112)
    flat = model.last_landmarks.flatten(1)
    torch.testing.assert_close(flat.amin(1), torch.full((2,), lo))
    torch.testing.assert_close(flat.amax(1), torch.full((2,), hi))


def test_gradient_reaches_landmark_cnn_only_through_patch_sampling():
    model = create_model("part_fvit_test", landmark_dropout=0.0)
    model.vit.requires_grad_(False)
    x = torch.randn(2, 3, 112, 112)
    model(x).pow(2).sum().backward()
    head_grad = model.landmark_net.head[1].weight.grad
    stem_grad = model.landmark_net.trunk.features[0][0].weight.grad
    assert head_grad is not None and head_grad.abs().sum() > 0
    assert stem_grad is not None and stem_grad.abs().sum() > 0


def test_a_step_on_the_landmark_cnn_alone_lowers_a_loss():
    model = create_model("part_fvit_test", landmark_output="sigmoid").eval()
    model.vit.requires_grad_(False)
    x = torch.randn(2, 3, 112, 112)
    target = torch.randn(2, model.embed_dim)
    params = list(model.landmark_net.head.parameters())
    loss = (model(x) - target).pow(2).mean()
    grads = torch.autograd.grad(loss, params)
    norm = torch.sqrt(sum(g.pow(2).sum() for g in grads))
    assert norm > 0
    with torch.no_grad():
        before = model.last_landmarks.clone()
        for p, g in zip(params, grads):
            p -= 1e-2 * g / norm
        after = (model(x) - target).pow(2).mean()
    assert not torch.equal(model.last_landmarks, before)
    assert after < loss.detach()


def test_frozen_landmark_cnn_gets_no_gradient_and_stays_in_eval():
    model = create_model("part_fvit_test", freeze_landmarks=True).train()
    assert not model.landmark_net.training and model.vit.training
    x = torch.randn(2, 3, 112, 112)
    model(x).sum().backward()
    assert all(p.grad is None for p in model.landmark_net.parameters())
    assert model.vit.cls_token.grad is not None
    a = model.predict_landmarks(x)
    torch.testing.assert_close(a, model.predict_landmarks(x))  # no dropout noise


def test_grid_token_centres_reduce_to_the_plain_vit():
    model = create_model("part_fvit_test").eval()
    x = torch.randn(2, 3, 112, 112)
    centres = grid_centers(14).expand(2, -1, -1)
    torch.testing.assert_close(
        model.forward_features(x, token_centers=centres),
        model.vit.forward_features(x),
        atol=1e-5,
        rtol=1e-5,
    )
    local = model.forward_ssl(x, token_centers=torch.rand(2, 36, 2))
    assert local.shape == (2, model.ssl_dim)


def test_grid_initialisation_starts_on_the_patch_grid():
    g = grid_centers(14)
    model = PartFViT(
        vit="fvit_test",
        landmark_trunk="lafs_small",
        landmark_width_mult=0.5,
        init_grid=True,
        coord_range=(float(g.min()), float(g.max())),
    ).eval()
    model(torch.randn(1, 3, 112, 112))
    torch.testing.assert_close(model.last_landmarks[0], g, atol=1e-5, rtol=0)


def test_registered_base_uses_lafs_settings():
    model = create_model("part_fvit_base")
    assert model.landmark_net.head[1].out_features == 2 * 196
    assert model.landmark_net.trunk.out_channels == 160
    assert model.vit.dim == 768 and len(model.vit.blocks) == 12


def test_export_round_trip(tmp_path):
    model = create_model("part_fvit_test", landmark_width_mult=0.25).eval()
    x = torch.randn(2, 3, 112, 112)
    loaded = load_export(save_export(model, tmp_path / "exp"))
    torch.testing.assert_close(loaded(x), model(x))
    assert {"vit.cls_token", "vit.pos_embed"} <= model.no_weight_decay()


def test_group_matcher_covers_every_parameter():
    import re

    model = create_model("part_fvit_test")
    groups = model.group_matcher()
    pats = [groups["stem"], *(p for p, _ in groups["blocks"]), groups["head"]]
    for name, _ in model.named_parameters():
        assert any(re.match(p, name) for p in pats), name
    assert re.match(groups["stem"], "landmark_net.trunk.features.0.0.weight")
    assert not re.match(groups["stem"], "vit.blocks.0.norm1.weight")


def test_forward_passes_landmarks_to_a_transformer_that_takes_token_centres():
    model = create_model("part_fvit_test").eval()

    class Recorder(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner
            self.centers: torch.Tensor | None = None

        def forward(self, x, keypoints=None, token_centers=None):
            self.centers = token_centers
            return self.inner(x, keypoints)

    model.vit = Recorder(model.vit)
    model(torch.randn(2, 3, 112, 112))
    torch.testing.assert_close(model.vit.centers, model.last_landmarks)
