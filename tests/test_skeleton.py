"""The joint sets agree with the specs' tables."""

from __future__ import annotations

import numpy as np
import pytest

from poseviewer import skeleton as sk


def test_cpm_to_h36m_matches_spec_table() -> None:
    # the table of lifting-spec.md
    assert sk.CPM_TO_H36M_SLOTS.tolist() == [1, 2, 3, 4, 5, 6, 8, 10, 11, 12, 13, 14, 15, 16]
    assert sk.CPM_TO_H36M_SOURCES.tolist() == [8, 9, 10, 11, 12, 13, 1, 0, 5, 6, 7, 2, 3, 4]
    renamed = {("thorax", "neck"), ("head", "head_top")}
    for slot, src in zip(sk.CPM_TO_H36M_SLOTS, sk.CPM_TO_H36M_SOURCES, strict=True):
        a, b = sk.H36M17.joints[slot], sk.CPM14.joints[src]
        assert a == b or (a, b) in renamed


def test_cpm_to_h36m_places_values() -> None:
    x = np.arange(14 * 2, dtype=float).reshape(1, 14, 2)
    out = sk.cpm_to_h36m(x, fill=np.nan)
    assert out.shape == (1, 17, 2)
    assert np.isnan(out[0, [0, 7, 9]]).all()
    np.testing.assert_array_equal(out[0, 8], x[0, 1])  # neck -> thorax
    np.testing.assert_array_equal(out[0, 16], x[0, 4])  # right wrist


def test_h36m_to_cpm_inverts_cpm_to_h36m() -> None:
    import torch

    # by name: every CPM joint reads the H36M joint of the same name (neck = thorax,
    # head_top = head)
    renamed = {"neck": "thorax", "head_top": "head"}
    h36m = np.arange(17 * 3, dtype=float).reshape(17, 3)
    cpm = sk.h36m_to_cpm(h36m)
    assert cpm.shape == (14, 3)
    for c, name in enumerate(sk.CPM14.joints):
        np.testing.assert_array_equal(cpm[c], h36m[sk.H36M17.index(renamed.get(name, name))])
    x = np.random.default_rng(0).normal(size=(4, 2, 14, 2))
    np.testing.assert_array_equal(sk.h36m_to_cpm(sk.cpm_to_h36m(x)), x)
    # torch in, torch out (same dtype), same values as numpy
    t = torch.as_tensor(sk.cpm_to_h36m(x), dtype=torch.float32)
    out = sk.h36m_to_cpm(t)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), x.astype(np.float32))
    with pytest.raises(ValueError, match="17"):
        sk.h36m_to_cpm(np.zeros((14, 2)))
    with pytest.raises(ValueError, match="17"):
        sk.h36m_to_cpm(torch.zeros(14, 2))


def test_lsp_to_cpm_by_name() -> None:
    lsp = np.arange(14)
    cpm = lsp[sk.LSP_TO_CPM]
    assert [sk.LSP14.joints[i] for i in cpm] == list(sk.CPM14.joints)
    assert sk.LSP_TO_CPM[0] == 13 and sk.LSP_TO_CPM[10] == 0  # head top, right ankle


@pytest.mark.parametrize("s", list(sk.SKELETONS.values()), ids=lambda s: s.name)
def test_flip_swaps_left_and_right(s: sk.Skeleton) -> None:
    perm = s.flip_permutation()
    np.testing.assert_array_equal(perm[perm], np.arange(s.num_joints))
    for j, name in enumerate(s.joints):
        other = s.joints[perm[j]]
        if name.startswith("left_"):
            assert other == "right_" + name[5:]
        elif name.startswith("right_"):
            assert other == "left_" + name[6:]
        else:
            assert other == name
    for j in s.left:
        assert s.joints[j].startswith("left_")
    for j in s.right:
        assert s.joints[j].startswith("right_")


@pytest.mark.parametrize("skel", [sk.CPM14, sk.H36M17])
def test_bones_form_a_tree(skel: sk.Skeleton) -> None:
    """Every joint reaches the one root by following parents, in fewer than J steps."""
    par = skel.parents()
    roots = np.flatnonzero(par == -1)
    assert len(roots) == 1 and len(skel.bones) == skel.num_joints - 1
    for j in range(skel.num_joints):
        k, steps = j, 0
        while par[k] != -1:
            k, steps = par[k], steps + 1
            assert steps < skel.num_joints
        assert k == roots[0]
    assert sk.H36M17.parents()[0] == -1  # pelvis is H36M's root
    assert skel.bone_colours().shape == (len(skel.bones), 3)


def test_parents_rejects_a_cycle_beside_the_root() -> None:
    """One root and one parent per joint is not enough: a detached cycle is no tree."""
    cyc = sk.Skeleton("cyc", joints=("r", "a", "b", "c"), bones=((0, 1), (2, 3), (3, 2)),
                      left=(), right=())
    with pytest.raises(ValueError, match="cycle"):
        cyc.parents()


def test_coco_mapping_covers_limbs() -> None:
    names = {sk.COCO17.joints[d] for d in sk.CPM_TO_COCO_DST}
    assert len(names) == 12 and "nose" not in names


def test_bad_skeleton_raises_value_error() -> None:
    """Validation is a ValueError (not an assert, which ``python -O`` drops)."""
    ok = {"joints": ("a", "b"), "bones": ((0, 1),), "left": (), "right": ()}
    sk.Skeleton("ok", **ok)
    with pytest.raises(ValueError, match="unique.*'a'"):
        sk.Skeleton("dup", **{**ok, "joints": ("a", "a")})
    with pytest.raises(ValueError, match=r"bone \(0, 2\)"):
        sk.Skeleton("bone", **{**ok, "bones": ((0, 2),)})
    with pytest.raises(ValueError, match=r"flip pair \(-1, 1\)"):
        sk.Skeleton("flip", **ok, flip_pairs=((-1, 1),))
    with pytest.raises(ValueError, match="side joint 5"):
        sk.Skeleton("side", **{**ok, "left": (5,)})
