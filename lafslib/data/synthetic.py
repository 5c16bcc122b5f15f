"""Procedural synthetic faces with exact 68- and 5-point landmarks.

Each identity is a fixed set of shape and colour parameters (face shape, skin, hair, iris and
lip colours, feature spacing and sizes); each sample of an identity varies pose (in-plane
rotation, a small yaw-like shift of the inner features), scale, translation, lighting and
expression (mouth opening, smile, brow raise). Every feature is drawn as a polygon through the
transformed landmark geometry, so the returned landmarks are exact. The canonical geometry is
close to the ArcFace 112x112 template, so samples are roughly aligned.

The 68 points follow the iBUG 300-W layout (0-16 jaw, 17-26 brows, 27-35 nose, 36-47 eyes,
48-67 mouth); the 5 points are the eye centres (mean of each eye's six contour points), the nose
tip (30) and the mouth corners (48, 54), in insightface order.

Example:
    >>> faces = SyntheticFaces(num_identities=4, images_per_identity=2)
    >>> sample = faces[0]
    >>> sample["image"].shape, sample["landmarks5"].shape
    ((112, 112, 3), (5, 2))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

__all__ = ["SyntheticFaces", "render_face", "identity_params", "landmarks68_to_5_exact"]

_CANON = 112.0


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng([abs(int(k)) for k in keys])


def identity_params(identity: int, seed: int = 0) -> dict[str, Any]:
    """Fixed shape and colour parameters of one synthetic identity."""
    r = _rng(seed, 7919, identity)
    skin = r.uniform([120, 80, 60], [240, 200, 170])
    return {
        "face_rx": r.uniform(36.0, 44.0),
        "face_ry": r.uniform(46.0, 54.0),
        "eye_dx": r.uniform(-2.5, 2.5),  # half-spacing offset of the eyes
        "eye_w": r.uniform(7.0, 10.0),
        "eye_h": r.uniform(2.5, 4.0),
        "eye_y": r.uniform(-2.0, 2.0),
        "nose_len": r.uniform(-3.0, 3.0),
        "nose_w": r.uniform(5.0, 8.0),
        "mouth_w": r.uniform(-3.0, 3.0),
        "mouth_y": r.uniform(-2.0, 2.0),
        "lip_h": r.uniform(2.0, 4.0),
        "brow_gap": r.uniform(6.0, 10.0),
        "skin": skin,
        "hair": r.uniform(10, 120, size=3) * r.uniform(0.3, 1.0),
        "iris": r.uniform(20, 140, size=3),
        "lips": np.clip(skin * r.uniform([0.7, 0.35, 0.35], [0.95, 0.6, 0.6]), 0, 255),
        "brow": r.uniform(10, 80, size=3),
        "background": r.uniform(0, 255, size=3),
        "hairline": r.uniform(18.0, 28.0),
    }


def _arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int) -> np.ndarray:
    t = np.linspace(a0, a1, n)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def _canonical_landmarks(p: dict[str, Any], s: dict[str, float]) -> np.ndarray:
    """68 landmarks (68, 2) in the canonical 112x112 frame before the pose transform."""
    pts = np.zeros((68, 2))
    cx, cy = 56.0, 58.0
    pts[0:17] = _arc(cx, cy, p["face_rx"], p["face_ry"], np.pi, 0.0, 17)
    shift = s["yaw"]
    eye_y = 51.6 + p["eye_y"]
    half = 17.6 + p["eye_dx"]
    eyes = []
    for side, ex in ((-1, cx - half + shift), (1, cx + half + shift)):
        w, h = p["eye_w"], p["eye_h"]
        outer, inner = ex + side * w, ex - side * w
        top = [ex + side * 0.35 * w, ex - side * 0.35 * w]
        bottom = [ex - side * 0.35 * w, ex + side * 0.35 * w]
        if side < 0:  # 36 outer, 37-38 top, 39 inner, 40-41 bottom (image-left eye)
            eye = [(outer, eye_y), (top[0], eye_y - h), (top[1], eye_y - h), (inner, eye_y)]
            eye += [(bottom[0], eye_y + h), (bottom[1], eye_y + h)]
        else:  # 42 inner, 43-44 top, 45 outer, 46-47 bottom (image-right eye)
            eye = [(inner, eye_y), (top[1], eye_y - h), (top[0], eye_y - h), (outer, eye_y)]
            eye += [(bottom[1], eye_y + h), (bottom[0], eye_y + h)]
        eyes.append(np.array(eye))
    pts[36:42], pts[42:48] = eyes
    brow_y = eye_y - p["brow_gap"] - s["brow"]
    for k, ex in enumerate((cx - half + shift, cx + half + shift)):
        xs = np.linspace(ex - 11.0, ex + 11.0, 5)
        ys = brow_y - 2.5 * np.sin(np.linspace(0.15, np.pi - 0.15, 5))
        pts[17 + 5 * k : 22 + 5 * k] = np.stack([xs, ys], axis=1)
    tip_y = 71.7 + p["nose_len"]
    nx = cx + 1.3 * shift
    bridge_x = cx + shift * np.linspace(0.6, 1.3, 4)
    pts[27:31] = np.stack([bridge_x, np.linspace(eye_y + 1.0, tip_y, 4)], axis=1)
    nw = p["nose_w"]
    pts[31:36] = np.stack(
        [nx + np.linspace(-nw, nw, 5), tip_y + 3.5 - np.array([0.0, 1.0, 1.6, 1.0, 0.0])], axis=1
    )
    my = 92.3 + p["mouth_y"]
    mw = 14.6 + p["mouth_w"] + s["smile"]
    mcx = cx + shift
    lip, opening, smile = p["lip_h"], s["open"], s["smile"]
    left, right = mcx - mw, mcx + mw
    corner_y = my - 0.6 * smile
    xs = np.linspace(left, right, 7)
    top_outer = my - lip - 0.5 * opening
    pts[48] = (left, corner_y)
    pts[49:54] = np.stack([xs[1:6], top_outer - np.array([0.0, 1.0, 0.4, 1.0, 0.0])], axis=1)
    pts[54] = (right, corner_y)
    bottom = my + lip + 0.5 * opening
    pts[55:60] = np.stack([xs[5:0:-1], bottom + np.array([0.0, 0.8, 1.2, 0.8, 0.0])], axis=1)
    inner_xs = np.linspace(left + 3.0, right - 3.0, 5)
    pts[60] = (left + 2.0, corner_y)
    pts[61:64] = np.stack([inner_xs[1:4], np.full(3, my - 0.5 * opening)], axis=1)
    pts[64] = (right - 2.0, corner_y)
    pts[65:68] = np.stack([inner_xs[3:0:-1], np.full(3, my + 0.5 * opening)], axis=1)
    return pts


def _sample_params(identity: int, sample: int, seed: int) -> dict[str, float]:
    r = _rng(seed, 104729, identity, sample)
    return {
        "angle": r.uniform(-10.0, 10.0),
        "scale": r.uniform(0.92, 1.08),
        "tx": r.uniform(-3.0, 3.0),
        "ty": r.uniform(-3.0, 3.0),
        "yaw": r.uniform(-3.0, 3.0),
        "open": r.uniform(0.0, 4.0) * (r.random() < 0.5),
        "smile": r.uniform(0.0, 2.5),
        "brow": r.uniform(0.0, 2.5),
        "gain": r.uniform(0.75, 1.2),
        "grad_x": r.uniform(-0.25, 0.25),
        "grad_y": r.uniform(-0.15, 0.15),
    }


def landmarks68_to_5_exact(pts68: np.ndarray) -> np.ndarray:
    """5 points (insightface order) from 68 iBUG points: eye centres, nose tip, mouth corners."""
    return np.stack(
        [pts68[36:42].mean(0), pts68[42:48].mean(0), pts68[30], pts68[48], pts68[54]]
    ).astype(np.float32)


def render_face(identity: int, sample: int, size: int = 112, seed: int = 0) -> dict[str, Any]:
    """Render one deterministic synthetic face.

    Args:
        identity: identity index (fixes shape and colour).
        sample: sample index within the identity (fixes pose, lighting, expression).
        size: output width and height in pixels.
        seed: global seed of the synthetic world.

    Returns:
        ``{"image": uint8 (size, size, 3), "label": identity, "landmarks5": float32 (5, 2),
        "landmarks68": float32 (68, 2), "index": sample}``, landmarks in pixels.
    """
    p = identity_params(identity, seed)
    s = _sample_params(identity, sample, seed)
    canon = _canonical_landmarks(p, s)
    theta = np.deg2rad(s["angle"])
    c, sn = np.cos(theta) * s["scale"], np.sin(theta) * s["scale"]
    rot = np.array([[c, -sn], [sn, c]])
    centre = np.array([56.0, 62.0])
    k = size / _CANON

    def pose(q: np.ndarray) -> np.ndarray:
        return ((q - centre) @ rot.T + centre + [s["tx"], s["ty"]]) * k

    lm68 = pose(canon)
    img = Image.new("RGB", (size, size), tuple(int(v) for v in p["background"]))
    draw = ImageDraw.Draw(img)

    def poly(q: np.ndarray, colour: np.ndarray) -> None:
        draw.polygon([tuple(v) for v in q], fill=tuple(int(x) for x in colour))

    cx, cy = 56.0, 58.0
    hair_rx, hair_ry = p["face_rx"] + 6.0, p["face_ry"] * 0.6 + p["hairline"]
    hair = _arc(cx, cy, hair_rx, hair_ry, np.pi, 2 * np.pi, 24)
    sides = [[cx + hair_rx, cy + 12], [cx - hair_rx, cy + 12]]
    poly(pose(np.vstack([hair, sides])), p["hair"])
    forehead = _arc(cx, cy, p["face_rx"], p["face_ry"] * 0.6, 0.0, -np.pi, 17)
    poly(pose(np.vstack([canon[0:17], forehead])), p["skin"])
    for a, b in ((17, 22), (22, 27)):
        brow = canon[a:b]
        poly(pose(np.vstack([brow, brow[::-1] + [0.0, 2.0]])), p["brow"])
    for a in (36, 42):
        eye = canon[a : a + 6]
        poly(pose(eye), np.array([245, 245, 240]))
        centre_eye = eye.mean(0)
        iris_r = 0.75 * abs(eye[2, 1] - eye[4, 1]) / 2 + 0.6
        poly(pose(_arc(*centre_eye, iris_r, iris_r, 0, 2 * np.pi, 16)), p["iris"])
        poly(pose(_arc(*centre_eye, iris_r * 0.45, iris_r * 0.45, 0, 2 * np.pi, 12)), np.zeros(3))
    nose_shadow = np.clip(p["skin"] * 0.7, 0, 255)
    poly(pose(np.vstack([canon[27:31] + [-1.2, 0.0], canon[30:26:-1] + [1.2, 0.0]])), nose_shadow)
    poly(pose(np.vstack([canon[31:36], canon[30:31]])), nose_shadow)
    poly(pose(canon[48:60]), p["lips"])
    if s["open"] > 0.5:
        poly(pose(canon[60:68]), np.array([40, 10, 10]))
    arr = np.asarray(img, dtype=np.float32)
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1) - 0.5
    light = s["gain"] * (1.0 + s["grad_x"] * xx + s["grad_y"] * yy)
    arr = np.clip(arr * light[..., None], 0, 255).astype(np.uint8)
    lm68 = lm68.astype(np.float32)
    return {
        "image": arr,
        "label": int(identity),
        "landmarks5": landmarks68_to_5_exact(lm68),
        "landmarks68": lm68,
        "index": int(sample),
    }


class SyntheticFaces(Dataset):
    """A labelled dataset of procedural faces with exact landmarks.

    Index ``i`` is identity ``i // images_per_identity``, sample ``i % images_per_identity``.
    Samples carry ``"landmarks"`` (the 5 points) like the other lafslib datasets.

    Args:
        num_identities: number of identities (classes).
        images_per_identity: samples per identity.
        size: image size in pixels.
        seed: seed of the synthetic world (same seed, same faces).
        transform: optional callable applied to the sample dict.
    """

    def __init__(
        self,
        num_identities: int = 64,
        images_per_identity: int = 8,
        size: int = 112,
        seed: int = 0,
        transform: Callable[[dict[str, Any]], Any] | None = None,
    ) -> None:
        if num_identities < 1 or images_per_identity < 1:
            raise ValueError(
                f"SyntheticFaces needs >= 1 identity and image, got {num_identities}, "
                f"{images_per_identity}"
            )
        self.num_identities = num_identities
        self.images_per_identity = images_per_identity
        self.size = size
        self.seed = seed
        self.transform = transform
        self.labels = [i // images_per_identity for i in range(len(self))]
        self.num_classes = num_identities

    def __len__(self) -> int:
        return self.num_identities * self.images_per_identity

    def sample(self, index: int) -> dict[str, Any]:
        """The raw sample dict at ``index`` (before the transform)."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} synthetic faces")
        ident, sample = divmod(index, self.images_per_identity)
        out = render_face(ident, sample, self.size, self.seed)
        out["index"] = int(index)
        out["path"] = f"synthetic:{ident}/{sample}"
        out["landmarks"] = out["landmarks5"]
        return out

    def __getitem__(self, index: int) -> Any:
        out = self.sample(index)
        return self.transform(out) if self.transform is not None else out
