"""LAFS landmark views and DINO multi-crop on real and synthetic faces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from lafslib.data import open_dataset, render_face
from lafslib.transforms import LAFSViews, MultiCropViews, group_views


def test_lafs_views_on_real_faces(celeba_112: Path) -> None:
    ds = open_dataset(celeba_112 / "images", transform=LAFSViews())
    views = ds[0]
    assert len(views) == 10 and [v["is_global"] for v in views] == [True] * 2 + [False] * 8
    assert views[0]["image"].shape == (3, 112, 112) and views[2]["image"].shape == (3, 48, 48)
    assert views[0]["token_centers"].shape == (196, 2) and views[5]["token_centers"].shape == (
        36,
        2,
    )
    for v in views:
        assert v["image"].min() >= -1 and v["image"].max() <= 1
        assert (v["token_centers"] >= 0).all() and (v["token_centers"] <= 1).all()
        assert v["keypoints"].shape == (5, 2)


def test_patches_sit_at_the_landmarks() -> None:
    """Without augmentation, each mosaic tile is the image patch around its landmark."""
    sample = render_face(0, 0)
    views = LAFSViews(global_views=1, local_views=0, sigma=0.0, global_scale=(1.0, 1.0))
    views.colour = lambda x, blur_p, solarize_p, signed=False, uniforms=None: (
        2 * x - 1 if signed else x
    )
    torch.manual_seed(3)
    v = views(sample)[0]
    img = torch.from_numpy(sample["image"]).permute(2, 0, 1).float() / 127.5 - 1
    c = v["token_centers"]
    # the full-image crop may be flipped; compare against the flipped image when it is
    for ref in (img, img.flip(-1)):
        x, y = (c[50] * 112).round().long().tolist()
        tile = v["image"][:, 24:32, 64:72]  # token 50 = row 3, col 8 of the mosaic
        patch = ref[:, y - 4 : y + 4, x - 4 : x + 4]
        if patch.shape == tile.shape and (patch - tile).abs().mean() < 0.05:
            break
    else:
        raise AssertionError("mosaic tile does not match the image around its landmark")


def test_keypoints_follow_flip_and_crop() -> None:
    sample = render_face(2, 1)
    views = LAFSViews(global_views=8, local_views=0, sigma=0.0)
    for v in views(sample):
        kp = v["keypoints"]
        assert kp[0, 0] < kp[1, 0] and kp[3, 0] < kp[4, 0]  # left/right stay image-left/right
        assert kp[2, 1] > kp[0, 1]  # nose below the eyes


def test_subset_sizes_and_seed_determinism(faces_mini: Path) -> None:
    ds = open_dataset(faces_mini / "identities", transform=LAFSViews(local_landmarks=16))
    torch.manual_seed(0)
    a = ds[3]
    torch.manual_seed(0)
    b = ds[3]
    assert a[4]["image"].shape == (3, 32, 32)
    for va, vb in zip(a, b):
        torch.testing.assert_close(va["image"], vb["image"])


def test_multicrop_and_grouping() -> None:
    views_fn = MultiCropViews()
    views = views_fn.render(default_collate([views_fn.draw(render_face(0, i)) for i in range(3)]))
    assert len(views) == 10 and views[0]["image"].shape == (3, 3, 112, 112)
    assert [v["is_global"] for v in views] == [True] * 2 + [False] * 8
    groups = group_views(views)
    assert [idx for idx, _ in groups] == [[0, 1], list(range(2, 10))]
    assert groups[1][1]["image"].shape == (24, 3, 48, 48)
    np.testing.assert_allclose(views[2]["token_centers"][0, 0].numpy(), [1 / 12, 1 / 12])


@pytest.mark.parametrize("kind", [LAFSViews, MultiCropViews])
def test_a_batch_renders_as_its_faces_alone(kind: type) -> None:
    """Rendering the draws of 3 faces together gives each face the views it gets alone (the
    per-sample seeding then makes views independent of batch, rank and device)."""
    views_fn = kind(local_views=2)
    faces = [render_face(i, 1) for i in range(3)]
    plans = []
    for i, face in enumerate(faces):
        torch.manual_seed(i)
        plans.append(views_fn.draw(face))
    together = views_fn.render(default_collate(plans))
    for i, face in enumerate(faces):
        torch.manual_seed(i)
        alone = views_fn(face)
        for v_batch, v_alone in zip(together, alone):
            for key in ("image", "token_centers", "keypoints"):
                torch.testing.assert_close(v_batch[key][i], v_alone[key], atol=1e-5, rtol=0)


def test_mosaics_equal_sampled_patches() -> None:
    from lafslib.layers.patch_sampling import patches_to_mosaic, sample_patches

    views = LAFSViews()
    images = torch.rand(3, 3, 112, 112)
    centers = torch.rand(3, 36, 2) * 1.1 - 0.05  # some patches reach past the border
    torch.testing.assert_close(
        views._mosaics(images, centers, 6),
        patches_to_mosaic(sample_patches(images, centers, 8), 6),
        atol=1e-4,
        rtol=0,
    )


def test_crop_boxes_follow_random_resized_crop() -> None:
    """The vectorised crop boxes have torchvision's RandomResizedCrop distribution."""
    from torchvision.transforms import v2

    from lafslib.transforms.crops import random_resized_boxes

    torch.manual_seed(0)
    boxes = random_resized_boxes(
        torch.rand(4000, 22, dtype=torch.float64).numpy(), 112, 96, (0.4, 1.0)
    )
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 112).all()
    assert (left + w <= 96).all() and (boxes == boxes.round()).all()
    img = torch.zeros(3, 112, 96)
    ref = np.array(
        [v2.RandomResizedCrop.get_params(img, [0.4, 1.0], [3 / 4, 4 / 3]) for _ in range(4000)],
        dtype=np.float64,
    )
    for ours, theirs in (
        (h * w, ref[:, 2] * ref[:, 3]),
        (w / h, ref[:, 3] / ref[:, 2]),
        (top / (113 - h), ref[:, 0] / (113 - ref[:, 2])),
        (left / (97 - w), ref[:, 1] / (97 - ref[:, 3])),
    ):
        assert abs(ours.mean() - theirs.mean()) < 0.03 * abs(theirs.mean()) + 0.01
        assert abs(ours.std() - theirs.std()) < 0.05 * theirs.std() + 0.01


def test_multicrop_keypoints_move_with_the_pixels() -> None:
    from lafslib.transforms.photometric import ColourAugment

    s = render_face(3, 1)
    x0, y0 = s["landmarks5"][0]  # the image-left eye: one bright dot on black
    image = np.zeros_like(s["image"])
    image[int(y0) - 1 : int(y0) + 2, int(x0) - 1 : int(x0) + 2] = 255
    views_fn = MultiCropViews(local_scale=(0.3, 0.6))
    views_fn.colour = ColourAugment(jitter_p=0.0, gray_p=0.0)
    views_fn.global_blur_p = views_fn.global_solarize_p = torch.zeros(2)
    views_fn.local_blur_p = views_fn.local_solarize_p = torch.zeros(8)
    flipped = 0
    torch.manual_seed(0)
    for _ in range(8):
        for view in views_fn({"image": image, "landmarks": s["landmarks5"]}):
            img = (view["image"].mean(0) + 1) / 2
            if img.max() < 0.2:  # the dot fell outside this crop
                continue
            w = img.clamp_min(0.2 * img.max()) - 0.2 * img.max()
            ys, xs = torch.meshgrid(
                torch.arange(img.shape[0]) + 0.5, torch.arange(img.shape[1]) + 0.5, indexing="ij"
            )
            dot = torch.stack([(w * xs).sum(), (w * ys).sum()]) / w.sum() / img.shape[-1]
            kp = view["keypoints"]
            assert kp[0, 0] < kp[1, 0]  # after a flip the other eye becomes point 0
            dist = (kp[:2] - dot).norm(dim=1) * img.shape[-1]
            assert dist.min() < 1.0, dist
            flipped += int(dist[1] < dist[0])
    assert flipped > 0


def test_grid_local_views_keep_the_layout_and_blank_the_rest() -> None:
    """local_layout='grid': a local view is its crop's full mosaic with k landmarks visible."""
    sample = render_face(1, 0)
    views = LAFSViews(
        global_views=1,
        local_views=6,
        num_landmarks=49,
        local_landmarks=20,
        patch_size=16,
        sigma=0.0,
        global_scale=(1.0, 1.0),
        local_layout="grid",
    )
    views.colour = lambda x, blur_p, solarize_p, signed=False, uniforms=None: (
        2 * x - 1 if signed else x
    )
    torch.manual_seed(5)
    out = views(sample)
    assert [v["is_global"] for v in out] == [True] + [False] * 6

    def cells(v: dict) -> torch.Tensor:
        return v["image"].view(3, 7, 16, 7, 16).permute(1, 3, 0, 2, 4).reshape(49, -1)

    img = torch.from_numpy(sample["image"]).permute(2, 0, 1).float() / 127.5 - 1
    for v in out[1:]:
        assert v["image"].shape == out[0]["image"].shape and v["token_centers"].shape == (49, 2)
        visible = ~(cells(v) == 0).all(1)
        assert int(visible.sum()) == 20
        # the visible cells are the crop's full mosaic there (the crop may be flipped)
        refs = [
            {"image": views._mosaics(ref[None], v["token_centers"][None], 7)[0]}
            for ref in (img, img.flip(-1))
        ]
        assert any(torch.allclose(cells(v)[visible], cells(r)[visible], atol=1e-5) for r in refs)
    masks = {tuple((cells(v) == 0).all(1).tolist()) for v in out[1:]}
    assert len(masks) == 6  # each local view draws its own subset


def test_grid_local_views_validate_their_sizes() -> None:
    with pytest.raises(ValueError, match="cannot exceed"):
        LAFSViews(num_landmarks=49, local_landmarks=50, local_layout="grid")
    with pytest.raises(ValueError, match="square"):
        LAFSViews(num_landmarks=49, local_landmarks=20)
    with pytest.raises(ValueError, match="local_layout"):
        LAFSViews(local_layout="ring")


@pytest.mark.parametrize(
    "layout,relight", [("mosaic", 0.0), ("grid", 0.5)], ids=["mosaic", "grid-relit"]
)
def test_views_rendered_for_a_batch_equal_the_views_of_each_sample(
    layout: str, relight: float
) -> None:
    """The training step renders a batch of per-sample draws at once (on its device); each
    sample's views equal those of the sample alone (``views(sample)``, show-views, the
    TensorBoard picture), so a batch's composition, the rank and the device do not change a
    sample's views."""
    views = LAFSViews(global_views=2, local_views=3, num_landmarks=49, local_landmarks=9,
                      patch_size=16, local_layout=layout, relight_strength=relight)  # fmt: skip
    samples = [render_face(i, 0) for i in range(4)]
    plans, alone = [], []
    for i, sample in enumerate(samples):
        torch.manual_seed(100 + i)
        plans.append(views.draw(sample))
        torch.manual_seed(100 + i)
        alone.append(views(sample))
    batched = views.render(torch.utils.data.default_collate(plans))
    assert len(batched) == 5 and [v["is_global"] for v in batched] == [True] * 2 + [False] * 3
    for i in range(4):
        for got, ref in zip(batched, alone[i]):
            for key in ("image", "token_centers", "keypoints"):
                torch.testing.assert_close(got[key][i], ref[key], atol=1e-6, rtol=0)
    assert not torch.equal(batched[0]["image"][0], batched[0]["image"][1])
    assert batched[2]["image"].shape == ((4, 3, 112, 112) if layout == "grid" else (4, 3, 48, 48))
