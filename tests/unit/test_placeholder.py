import base64

import blurhash as reference
import numpy as np
import pytest
import pyvips

from processors.placeholder import blurhash, make_placeholder
from processors.render import render
from processors.spec import DEFAULT_PRESET
from tests.images import encode, gradient, solid, to_array


@pytest.mark.parametrize(("width", "height", "xc", "yc"), [(32, 48, 3, 4), (40, 20, 4, 3),
                                                           (9, 9, 1, 1), (16, 16, 9, 9)])
def test_blurhash_matches_the_reference_implementation(width: int, height: int, xc: int,
                                                       yc: int) -> None:
    pixels = to_array(gradient(width, height)).astype(np.uint8)
    assert blurhash(pixels, xc, yc) == reference.encode(pixels.tolist(), xc, yc)


def test_every_render_has_placeholders_that_decode_to_the_picture() -> None:
    source = gradient(600, 900)
    placeholder = render(encode(source, "jpg"), DEFAULT_PRESET).placeholder

    decoded = np.array(reference.decode(placeholder.blurhash, 20, 30), dtype=float)
    small = to_array(source.resize(20 / 600))
    assert np.abs(decoded.mean(axis=(0, 1)) - small.mean(axis=(0, 1))).max() < 12
    # the gradient's directions survive: red grows to the right, green downwards
    assert decoded[15, -3, 0] > decoded[15, 2, 0] + 60
    assert decoded[-3, 10, 1] > decoded[2, 10, 1] + 60

    assert placeholder.lqip.startswith("data:image/webp;base64,") and len(placeholder.lqip) <= 1024
    preview = pyvips.Image.new_from_buffer(base64.b64decode(placeholder.lqip.split(",")[1]), "")
    assert (preview.width, preview.height) == (16, 24)

    r, g, b = (int(placeholder.dominant_color[i:i + 2], 16) for i in (1, 3, 5))
    mean = to_array(source).mean(axis=(0, 1))
    assert np.abs(np.array([r, g, b]) - mean).max() < 8


def test_dominant_colour_of_a_flat_image_and_alpha_over_white() -> None:
    assert make_placeholder(solid(50, 80, [200, 10, 30])).dominant_color == "#c80a1e"
    clear = pyvips.Image.black(50, 50, bands=4).copy(interpretation="srgb").cast("uchar")
    assert make_placeholder(clear).dominant_color == "#ffffff"
