"""The skeleton's facts (joint counts, flip pairs) are read from the joint set, not spelled
again: the network's mirror pass swaps the channels its skeleton pairs, the backend hands
on the network's skeleton, the selection checks joints against its skeleton, and the
exporters' shape checks name the joint set's count."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from poseviewer.cnn.backend import CPMBackend
from poseviewer.cnn.config import tiny_test
from poseviewer.cnn.lifting_cpm import LiftingCPM
from poseviewer.selection import Selection
from poseviewer.skeleton import COCO17, CPM14, H36M17


def test_mirror_channels_follow_the_networks_skeleton() -> None:
    net = LiftingCPM(tiny_test(fusion=False))
    assert net.skeleton is CPM14
    chans = net._mirror_channels(CPM14.num_joints + 1, torch.device("cpu")).tolist()
    # CPM-14 by hand: right/left shoulder, elbow, wrist, hip, knee, ankle swap; the head
    # top, the neck and the background channel stay
    assert chans == [0, 1, 5, 6, 7, 2, 3, 4, 11, 12, 13, 8, 9, 10, 14]
    # another pairing of the same 14 joints: the channels follow it
    odd = replace(CPM14, name="odd", flip_pairs=((0, 1), (2, 13)))
    other = LiftingCPM(tiny_test(fusion=False))
    other.skeleton = odd
    chans = other._mirror_channels(CPM14.num_joints + 1, torch.device("cpu")).tolist()
    assert chans == [1, 0, 13, *range(3, 13), 2, 14]
    # a joint set of another size cannot mirror these maps
    other = LiftingCPM(tiny_test(fusion=False))
    other.skeleton = COCO17
    with pytest.raises(ValueError, match="17 joints of coco17, got 14"):
        other._mirror_channels(CPM14.num_joints + 1, torch.device("cpu"))


def test_backend_hands_on_the_networks_skeleton() -> None:
    net = LiftingCPM(tiny_test(fusion=False))
    net.skeleton = replace(CPM14, name="renamed")
    assert CPMBackend(net, device="cpu").skeleton is net.skeleton


def test_selection_checks_joints_against_its_skeleton() -> None:
    sel = Selection()
    assert sel.skeleton is CPM14
    sel.set_joint(CPM14.num_joints - 1)
    assert sel.joint == 13
    with pytest.raises(ValueError, match="out of range 0..13"):
        sel.set_joint(14)
    wide = Selection(COCO17)
    wide.set_joint(16)
    assert wide.joint == 16
    with pytest.raises(ValueError, match="out of range 0..16"):
        wide.set_joint(17)


def test_exporters_shape_checks_use_the_joint_sets() -> None:
    from poseviewer.export.bvh import bvh_parts
    from poseviewer.export.video import bvh_animation_text
    from poseviewer.result import PersonResult, StageResult

    with pytest.raises(ValueError, match=r"expected \(17, 3\)"):
        bvh_parts(np.zeros((CPM14.num_joints, 3)))
    with pytest.raises(ValueError, match=r"expected \(F, 17, 3\)"):
        bvh_animation_text(np.zeros((2, CPM14.num_joints, 3)), 0.04)
    # a person who was not lifted: a NaN pose of the 3D joint set's size
    j = CPM14.num_joints
    stage = StageResult(index=0, cnn_maps=np.zeros((j, 0, 0), np.float32), projected_maps=None,
                        fused_maps=np.zeros((j, 0, 0), np.float32),
                        joints_2d=np.zeros((j, 2)), confidence=np.ones(j),
                        visible=np.ones(j, bool), fit=None)
    person = PersonResult(box=np.zeros(4), centre=np.zeros(2), source="given",
                          map_to_image=np.eye(2, 3), stages=[stage])
    pose = person.pose_3d
    assert pose.shape == (H36M17.num_joints, 3) and np.isnan(pose).all()
