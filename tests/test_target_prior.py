"""Whom to look at (issue 22): the target prior keeps a neighbour's strong map evidence
from winning a person's joint."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from poseviewer.cnn.ops import read_joints_softmax
from poseviewer.cnn.prior import DEFAULT_PRIOR, TargetPrior, log_prior
from poseviewer.cnn.weights import load_cpm
from poseviewer.estimator import Estimator
from poseviewer.paths import DEFAULT_CNN
from poseviewer.skeleton import CPM14

# A 192 px crop (stride 4: 48 x 48 maps), crop pixels = image pixels. The target stands in
# x 40..150, a neighbour beside and over them in x 130..260.
TARGET = np.array([40.0, 20.0, 150.0, 180.0])
NEIGHBOUR = np.array([130.0, 20.0, 260.0, 180.0])
MAP_TO_IMAGE = np.array([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0]])
WRIST = CPM14.index("left_wrist")
OWN = (30, 25)     # map (x, y): crop (120, 100), the target's own wrist, weaker
THEIRS = (42, 25)  # crop (168, 100), the neighbour's wrist inside their box, stronger


def _logits() -> torch.Tensor:
    """(1, 14, 48, 48) joint logits: every joint a peak of 6 at the target's centre, the
    left wrist two peaks: 7 at the target's wrist, 10 at the neighbour's."""
    yy, xx = torch.meshgrid(torch.arange(48.0), torch.arange(48.0), indexing="ij")

    def peak(x: float, y: float, h: float) -> torch.Tensor:
        return h * torch.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 2.0)

    z = peak(24, 25, 6.0).expand(1, 14, 48, 48).clone()
    z[0, WRIST] = torch.maximum(peak(*OWN, 7.0), peak(*THEIRS, 10.0))
    return z


def test_prior_geometry_by_hand() -> None:
    p = log_prior(TargetPrior(outside=10.0, neighbour=4.0), TARGET, NEIGHBOUR[None],
                  MAP_TO_IMAGE, (48, 48))
    # inside the target, nearer its centre than the neighbour's: no weight
    assert p[25, 24] == 0.0 and p[OWN[1], OWN[0]] == 0.0
    # the neighbour's wrist at crop (168, 100): rho_target = 73 / 55, rho_neighbour =
    # 27 / 65, outside the target by 18 px = 18 / 160 of its longer side
    want = -4.0 * (73 / 55 - 27 / 65) - 10.0 * 18 / 160
    assert p[THEIRS[1], THEIRS[0]] == pytest.approx(want, rel=1e-5)
    # without neighbours only the outside term remains; off: nothing
    alone = log_prior(TargetPrior(outside=10.0, neighbour=4.0), TARGET, np.zeros((0, 4)),
                      MAP_TO_IMAGE, (48, 48))
    assert alone[THEIRS[1], THEIRS[0]] == pytest.approx(-10.0 * 18 / 160, rel=1e-5)
    assert not TargetPrior().active and DEFAULT_PRIOR.active


def test_a_neighbours_strong_wrist_no_longer_wins() -> None:
    z = _logits()
    b = torch.exp(z - z.amax(dim=(-2, -1), keepdim=True))
    xy, _ = read_joints_softmax(b)
    assert tuple(np.round(xy[0, WRIST].numpy()).astype(int)) == THEIRS  # today: theirs
    # through the network's own forward (default model, mirror pass off): stage 1 outputs
    # these logits, later stages add nothing to the log of the maps before them
    net = load_cpm(DEFAULT_CNN).eval()
    net.set_flip_test(False)
    calls = []

    def head(names, x):
        calls.append(names)
        return z.clone() if len(calls) == 1 else torch.zeros_like(z)

    net._head = head
    prior = torch.from_numpy(log_prior(DEFAULT_PRIOR, TARGET, NEIGHBOUR[None], MAP_TO_IMAGE,
                                       (48, 48)))[None, None]
    with torch.no_grad():
        plain = net(torch.zeros(1, 3, 192, 192))
        calls.clear()
        seen = net(torch.zeros(1, 3, 192, 192), prior=prior)
    for st in plain.stages:
        assert tuple(np.round(st.joints[0, WRIST].numpy()).astype(int)) == THEIRS
    for st in seen.stages:
        assert tuple(np.round(st.joints[0, WRIST].numpy()).astype(int)) == OWN
        # the other joints keep their peak at the target's centre
        assert tuple(np.round(st.joints[0, 0].numpy()).astype(int)) == (24, 25)


def test_estimator_gives_each_crop_its_own_prior() -> None:
    est = Estimator.default(device="cpu")
    assert est.target_prior == DEFAULT_PRIOR
    img = np.full((200, 300, 3), 100, np.uint8)
    loaded = est.load_image(img)
    people = est.people(loaded, boxes=[TARGET, NEIGHBOUR])
    crops = est.crops(loaded, people)
    m = est.map_to_image(crops)
    size = est.backend.map_size
    assert crops.prior.shape == (2, size, size)
    for i, (me, other) in enumerate(((TARGET, NEIGHBOUR), (NEIGHBOUR, TARGET))):
        np.testing.assert_allclose(crops.prior[i], log_prior(
            DEFAULT_PRIOR, me, other[None], m[i], (size, size)), rtol=1e-5)
        # the map pixel nearest the other person's centre is penalised, the own centre not
        inv = np.linalg.inv(np.vstack([m[i], [0, 0, 1]]))
        for box, penalised in ((me, False), (other, True)):
            c = inv @ np.r_[(box[:2] + box[2:]) / 2, 1]
            x, y = np.clip(np.round(c[:2]).astype(int), 0, size - 1)
            assert (crops.prior[i, y, x] < -1.0) == penalised
    # one person: no neighbours, and the default has no outside term: no prior at all
    alone = est.crops(loaded, est.people(loaded, boxes=[TARGET]))
    assert alone.prior is None
    # switched off: no prior with neighbours either
    est.target_prior = TargetPrior(0.0, 0.0)
    assert est.crops(loaded, people).prior is None


def test_estimate_many_applies_each_crops_prior_as_estimate_does() -> None:
    """Batched images get the same prior per crop (padding included) as one at a time."""
    from poseviewer.cnn.weights import load_cpm as load

    boxes = np.array([TARGET, NEIGHBOUR])
    est = Estimator(load(DEFAULT_CNN), None, device="cpu",
                    detector=lambda rgb: (boxes, np.ones(2)))
    est.flip_test = False
    rng = np.random.default_rng(0)
    imgs = [(rng.random((200, 300, 3)) * 255).astype(np.uint8) for _ in range(2)]
    one = [est.estimate(im) for im in imgs]
    off = Estimator(load(DEFAULT_CNN), None, device="cpu",
                    detector=lambda rgb: (boxes, np.ones(2)),
                    target_prior=TargetPrior(0.0, 0.0))
    off.flip_test = False
    plain = off.estimate(imgs[0])
    for batch in (None, 3):
        many = est.estimate_many(imgs, batch_size=batch)
        for a, b in zip(one, many, strict=True):
            for pa, pb in zip(a.persons, b.persons, strict=True):
                np.testing.assert_allclose(pa.final.cnn_maps, pb.final.cnn_maps, atol=1e-4)
    # and the prior did something: the maps differ from those without it
    assert not np.allclose(one[0].persons[0].final.cnn_maps, plain.persons[0].final.cnn_maps,
                           atol=1e-3)
