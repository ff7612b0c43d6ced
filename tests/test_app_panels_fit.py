"""The viewer's panels use their room (issue 24): belief-map tiles grow with the panel (the
column count follows its shape) and can be drawn over the person's crop; the 3D panel's
ghost tags sit beside the poses and the ground grid under the lowest point drawn."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("PySide6")

from test_app import FakeEstimator, make_window, open_and_wait, write_image  # noqa: E402

from poseviewer.app.maps_view import CROP_UPSAMPLE, best_columns, crop_affine  # noqa: E402

pytestmark = pytest.mark.gui


def test_best_columns_by_hand() -> None:
    # 14 square tiles: a square area takes 4 columns (4 x 4 grid: 1/4 each side), a wide
    # strip one row of 14, a tall one a single column
    assert best_columns(14, 1.0, 1.0, 100, 100) == (4, 25.0)
    assert best_columns(14, 1.0, 1.0, 1400, 100) == (14, 100.0)
    assert best_columns(14, 1.0, 1.0, 100, 1400) == (1, 100.0)
    assert best_columns(14, 1.0, 1.0, 500, 300)[0] == 5  # 5 x 3: 100 px; 7 x 2: 71 px
    assert best_columns(14, 1.0, 1.0, 700, 200)[0] == 7  # 7 x 2: 100 px; 5 x 3: 67 px
    # a 20 px title band on each row: 3 rows lose 60 px of 300, 2 rows 40
    assert best_columns(14, 1.0, 1.0, 500, 300, band_px=20.0) == (5, 80.0)


def test_crop_affine_by_hand() -> None:
    m = np.array([[4.0, 0.0, 10.0], [0.0, 4.0, 20.0]])  # map pixel -> image: x4, shifted
    a = crop_affine(m, 0.5, up=2)  # the photo shown at half size, tiles at 2x
    # tile pixel (1, 1) is map coordinate ((1 + 0.5) / 2 - 0.5) = 0.25
    np.testing.assert_allclose(a @ [1, 1, 1], 0.5 * (np.array([4 * 0.25 + 10,
                                                                4 * 0.25 + 20])))


def _tile_px(panel) -> float:
    return panel.tile_screen_size()


def test_tiles_grow_with_the_panel(qtbot, settings, tmp_path) -> None:
    from poseviewer.app.maps_view import BeliefMapPanel

    win = make_window(qtbot, settings, FakeEstimator(stages=2))
    open_and_wait(qtbot, win, write_image(tmp_path / "p.png"))
    panel = BeliefMapPanel(win.state)  # a panel of its own, sized freely (Xvfb: 800 x 600)
    qtbot.addWidget(panel)
    panel.show()
    panel._draw_maps()
    sizes = {}
    for name, (w, h) in {"small": (360, 220), "wide": (780, 170), "big": (780, 580),
                         "tall": (330, 580)}.items():
        panel.resize(w, h)
        qtbot.waitUntil(lambda w=w, h=h: panel.width() == w and panel.height() == h,
                        timeout=3000)
        qtbot.wait(50)
        sizes[name] = (_tile_px(panel), panel.columns)
    assert sizes["big"][0] > 1.8 * sizes["small"][0], sizes
    assert sizes["big"][0] > 110, sizes  # not the ~72 px of a fixed 5 x 3 layout
    assert sizes["wide"][1] > 5 > sizes["tall"][1], sizes  # the layout follows the shape
    # maps still land in their tiles
    s = win.state.stage_result
    for j in (0, 7, 13):
        np.testing.assert_array_equal(panel.map_data(j), s.fused_maps[j])


def test_maps_over_the_crop(qtbot, settings, tmp_path) -> None:
    win = make_window(qtbot, settings, FakeEstimator(stages=2))
    open_and_wait(qtbot, win, write_image(tmp_path / "p.png"))
    panel = win.maps_panel
    plain = panel.mosaic.image.copy()
    panel.crop_check.setChecked(True)
    shown = panel.mosaic.image
    assert shown.shape[:2] == (plain.shape[0] * CROP_UPSAMPLE, plain.shape[1] * CROP_UPSAMPLE)
    # where the map is ~0 the tile shows the photo at the crop's pixel: the image point the
    # map pixel stands for (map_to_image), grey, dimmed (independent check, pixel by pixel)
    s, p = win.state.stage_result, win.state.person_result
    img = win.state.image
    maps = s.fused_maps
    hi = float(maps.max())
    j = 3
    rect = panel.tile_rect(j)
    checked = 0
    for v in range(0, maps.shape[1], 3):
        for u in range(0, maps.shape[2], 3):
            if maps[j, v, u] > 1e-3 * hi:
                continue
            x, y = p.map_to_image @ [u, v, 1.0]
            xi, yi = int(round(x)), int(round(y))
            if not (1 <= xi < img.shape[1] - 1 and 1 <= yi < img.shape[0] - 1):
                continue
            want = 0.8 * float(img[yi, xi] @ [0.299, 0.587, 0.114])
            # the tile pixel at the centre of map pixel (u, v)
            ty = int((rect.top() + v) * CROP_UPSAMPLE + CROP_UPSAMPLE // 2)
            tx = int((rect.left() + u) * CROP_UPSAMPLE + CROP_UPSAMPLE // 2)
            got = shown[ty, tx, :3].astype(float)
            assert np.allclose(got, want, atol=6), (u, v, got, want)
            checked += 1
    assert checked > 20
    # a peak keeps the map's colour (not the photo's grey)
    v, u = np.unravel_index(np.argmax(maps[j]), maps[j].shape)
    ty = int((rect.top() + v) * CROP_UPSAMPLE + 1)
    tx = int((rect.left() + u) * CROP_UPSAMPLE + 1)
    np.testing.assert_array_equal(shown[ty, tx], panel._lut[255])
    panel.crop_check.setChecked(False)
    np.testing.assert_array_equal(panel.mosaic.image, plain)


def test_ghost_tags_beside_the_poses_and_the_grid_under_the_lowest_point(
        qtbot, settings, tmp_path) -> None:
    win = make_window(qtbot, settings, FakeEstimator(stages=2))
    open_and_wait(qtbot, win, write_image(tmp_path / "p.png"))
    v = win.view3d
    placed = v.tag_rects()
    assert placed
    poses = v.pose_rect()
    for _, r in placed:  # never over a skeleton
        assert not r.intersects(poses)
    drawn = np.concatenate([v._solid, *v._ghost_poses])
    grid = v.grid.pos
    assert np.allclose(grid[:, 2], v.ground)
    assert v.ground < drawn[:, 2].min() and drawn[:, 2].min() - v.ground < 0.05
    # the grid spans every pose drawn
    assert grid[:, 0].min() <= drawn[:, 0].min() and grid[:, 0].max() >= drawn[:, 0].max()
    assert grid[:, 1].min() <= drawn[:, 1].min() and grid[:, 1].max() >= drawn[:, 1].max()
    # with the ellipsoids on, nothing drawn dips below the grid either
    if v.cov_check.isEnabled():
        v.cov_check.setChecked(True)
        if len(v.shown_ellipsoids):
            assert v.ground < v.shown_ellipsoids[:, 2].min()
            assert np.allclose(v.grid.pos[:, 2], v.ground)
