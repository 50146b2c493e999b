"""Each op changes the pixels it should, and only those."""

import numpy as np
import pytest
import pyvips

from processors import errors
from processors.render import render
from processors.spec import Preset, RenditionSpec, Watermark, rendition
from tests.images import encode, gradient, solid, ssim, to_array


def one(spec: RenditionSpec, source: pyvips.Image) -> np.ndarray:
    result = render(encode(source, "png"), Preset(name="t", version="1", renditions=(spec,)))
    return to_array(pyvips.Image.new_from_buffer(result.renditions[0].data, ""))


def with_ops(*ops: dict[str, object], width: int = 400, **more: object) -> RenditionSpec:
    return RenditionSpec.model_validate(
        {"name": "r", "width": width, "format": "png", "ops": list(ops), **more})


def checkerboard(size: int, cell: int = 4) -> pyvips.Image:
    xyz = pyvips.Image.xyz(size, size)
    cells = ((xyz[0] / cell).floor() + (xyz[1] / cell).floor()).cast("int") % 2
    grey = (cells * 255).cast("uchar")
    return grey.bandjoin([grey, grey]).copy(interpretation="srgb")


def test_crop_box_in_source_pixels_survives_shrink_on_load() -> None:
    source = gradient(2000, 3000)  # white marker covers the top-left 500 x 750
    out = one(with_ops({"op": "crop", "left": 0, "top": 0, "width": 400, "height": 600},
                       width=200), source)
    assert out.shape[:2] == (300, 200)
    assert out.mean() > 250  # all marker


def test_crop_outside_the_image_is_an_invalid_spec() -> None:
    with pytest.raises(errors.PermanentError) as err:
        one(with_ops({"op": "crop", "left": 5000, "top": 0, "width": 10, "height": 10}),
            gradient(400, 600))
    assert err.value.code == errors.INVALID_SPEC


def test_right_angle_rotation_swaps_the_box() -> None:
    source = gradient(400, 600)
    out = one(with_ops({"op": "rotate", "angle": 90}, width=300), source)
    assert out.shape[:2] == (200, 300)
    assert out[:20, -20:].mean() > 240  # clockwise: the top-left marker is now top-right
    assert ssim(pyvips.Image.new_from_array(out.astype(np.uint8)), source.rot90()) > 0.9


def test_any_angle_fills_the_corners_with_the_background() -> None:
    out = one(with_ops({"op": "rotate", "angle": 30, "background": "#00ff00"}),
              gradient(400, 400))
    side = 400 * (np.cos(np.radians(30)) + np.sin(np.radians(30)))
    assert out.shape[1] == 400 and abs(out.shape[0] - 400) <= 1  # square stays square
    assert side > 400  # ...because it was scaled down from the larger rotated box
    assert out[2, 2].tolist() == pytest.approx([0, 255, 0], abs=3)


def test_flip() -> None:
    out = one(with_ops({"op": "flip", "direction": "horizontal"}), gradient(400, 600))
    assert out[:20, -20:].mean() > 240 and out[:20, :20].mean() < 200
    out = one(with_ops({"op": "flip", "direction": "vertical"}), gradient(400, 600))
    assert out[-20:, :20].mean() > 240


def test_blur_smooths_and_sharpen_adds_edge_contrast() -> None:
    board = checkerboard(200)
    plain = one(with_ops(width=200), board)
    blurred = one(with_ops({"op": "blur", "sigma": 3}, width=200), board)
    assert blurred.std() < plain.std() / 3
    soft = checkerboard(200, cell=10).gaussblur(2)
    edges = [np.abs(np.diff(one(with_ops(*ops, width=200), soft)[:, :, 0], axis=1)).max()
             for ops in ((), ({"op": "sharpen", "sigma": 1.5},))]
    assert edges[1] > edges[0] * 1.2


@pytest.mark.parametrize(("position", "region"), [
    ("south-east", (slice(500, 600), slice(250, 400))),
    ("north-west", (slice(0, 100), slice(0, 150))),
    ("centre", (slice(250, 350), slice(100, 300))),
])
def test_text_watermark_is_visible_where_it_was_put(position: str, region: tuple[slice, slice]
                                                    ) -> None:
    source = solid(400, 600, [40, 40, 90])
    plain = one(with_ops(), source)
    marked = one(with_ops({"op": "watermark", "text": "SAMPLE", "size": 0.08,
                           "opacity": 0.9, "position": position}), source)
    difference = np.abs(marked - plain).sum(axis=2)
    changed = difference > 60
    inside = changed[region].sum()
    assert inside > 100  # white letters on dark blue
    assert changed.sum() - inside < inside * 0.05  # and nowhere else


def test_watermark_opacity_sets_how_strongly_it_shows() -> None:
    source = solid(400, 600, [0, 0, 0])
    strength = [one(with_ops({"op": "watermark", "text": "MARK", "opacity": o}), source).max()
                for o in (0.3, 1.0)]
    assert strength[0] == pytest.approx(0.3 * 255, abs=12)
    assert strength[1] > 245


def test_logo_watermark_from_bytes() -> None:
    logo = encode(solid(50, 50, [255, 0, 0]), "png")
    spec = RenditionSpec(name="r", width=400, format="png", ops=(
        Watermark(logo=logo, size=0.25, opacity=1.0, position="north-east", margin=0),))
    out = one(spec, gradient(400, 600).draw_rect([0, 0, 0], 300, 0, 100, 100, fill=True))
    assert out[5:95, 305:395].mean(axis=(0, 1)).tolist() == pytest.approx([255, 0, 0], abs=3)
    assert out[300, 200, 0] < 200  # the rest is the gradient


def test_text_is_literal_not_markup() -> None:
    source = gradient(400, 600)
    out = one(with_ops({"op": "watermark", "text": "<b>&"}), source)
    assert out.shape[:2] == (600, 400)


def test_ops_apply_in_their_order_within_each_phase() -> None:
    spec = rendition("r", 200, "png", height=300, fit="cover", gravity="centre",
                     ops=({"op": "rotate", "angle": 90}, {"op": "crop", "left": 0, "top": 0,
                                                          "width": 600, "height": 400}))
    out = one(spec, gradient(800, 1200))
    assert out.shape[:2] == (300, 200)
    # rotated first (1200 x 800, marker top-right), so the crop left the marker out
    assert (out > 250).all(axis=2).sum() < 50
