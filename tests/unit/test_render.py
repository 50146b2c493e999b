import pytest
import pyvips

from processors import errors
from processors.render import render
from processors.spec import DEFAULT_PRESET, Limits, Preset, RenditionSpec
from tests.images import encode, gradient, ssim, to_array


def test_default_preset_widths_formats_and_similarity() -> None:
    source = gradient(2000, 3000)
    result = render(encode(source, "jpg", Q=95), DEFAULT_PRESET)
    got = {r.name: r for r in result.renditions}
    assert [r.name for r in result.renditions] == ["thumb", "medium", "large"]
    for name, width, fmt in (("thumb", 200, "jpeg"), ("medium", 800, "webp"),
                             ("large", 1600, "jpeg")):
        out = pyvips.Image.new_from_buffer(got[name].data, "")
        assert (out.width, out.height) == (width, width * 3 // 2)
        assert got[name].format == fmt
        assert out.get("vips-loader").startswith(fmt)
        assert ssim(out, source) > 0.9
    assert (result.source_width, result.source_height) == (2000, 3000)


def test_never_enlarges() -> None:
    result = render(encode(gradient(300, 450), "png"), DEFAULT_PRESET)
    assert [(r.width, r.height) for r in result.renditions] == [(200, 300), (300, 450),
                                                                (300, 450)]


def test_metadata_is_stripped() -> None:
    source = gradient(400, 600).copy()
    source.set_type(pyvips.GValue.gstr_type, "exif-ifd0-Artist", "Somebody")
    data = encode(source, "jpg")
    assert b"Somebody" in data
    for rendition in render(data, DEFAULT_PRESET).renditions:
        out = pyvips.Image.new_from_buffer(rendition.data, "")
        assert "exif-data" not in out.get_fields()
        assert b"Somebody" not in rendition.data


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_applied(orientation: int) -> None:
    upright = gradient(400, 600)
    # Store the pixels so that a viewer applying `orientation` shows `upright`.
    stored = {3: upright.rot180(), 6: upright.rot270(), 8: upright.rot90()}[orientation].copy()
    stored.set_type(pyvips.GValue.gint_type, "orientation", orientation)
    result = render(encode(stored, "jpg", Q=95), DEFAULT_PRESET)
    thumb = pyvips.Image.new_from_buffer(result.renditions[0].data, "")
    assert (thumb.width, thumb.height) == (200, 300)
    assert ssim(thumb, upright) > 0.9
    top_left = to_array(thumb)[:20, :20].mean()
    assert top_left > 240  # the white marker is back in the top-left corner
    assert (result.source_width, result.source_height) == (400, 600)


def test_alpha_is_flattened_onto_white_for_jpeg_and_kept_for_png() -> None:
    preset = Preset("t", "1", (RenditionSpec("j", 100, "jpeg"), RenditionSpec("p", 100, "png")))
    result = render(encode(gradient(200, 200, alpha=True), "png"), preset)
    jpeg, png = (pyvips.Image.new_from_buffer(r.data, "") for r in result.renditions)
    assert jpeg.bands == 3 and png.bands == 4


def test_cmyk_and_16_bit_come_out_as_8_bit_srgb() -> None:
    source = gradient(300, 300)
    cmyk = encode(source.colourspace("cmyk"), "jpg", Q=95)
    deep = encode(source.colourspace("rgb16"), "png")
    for data in (cmyk, deep):
        out = pyvips.Image.new_from_buffer(render(data, DEFAULT_PRESET).renditions[0].data, "")
        assert out.interpretation == "srgb" and out.format == "uchar" and out.bands == 3
        assert ssim(out, source) > 0.8


def test_placeholder_is_tiny_and_decodes() -> None:
    import base64

    result = render(encode(gradient(400, 600), "jpg"), DEFAULT_PRESET)
    placeholder = result.placeholder
    assert placeholder.dominant_color.startswith("#") and len(placeholder.dominant_color) == 7
    assert len(placeholder.lqip) < 1024
    preview = base64.b64decode(placeholder.lqip.split(",", 1)[1])
    assert pyvips.Image.new_from_buffer(preview, "").width == 16


@pytest.mark.parametrize(("data", "code"), [
    (b"just some text, not an image", errors.UNSUPPORTED_TYPE),
    (b"<svg xmlns='http://www.w3.org/2000/svg'/>", errors.UNSUPPORTED_TYPE),
    (b"\xff\xd8\xff\xe0" + b"\x00" * 50, errors.CORRUPT_IMAGE),
])
def test_bad_input_has_reason_codes(data: bytes, code: str) -> None:
    with pytest.raises(errors.PermanentError) as err:
        render(data, DEFAULT_PRESET)
    assert err.value.code == code


def test_truncated_jpeg_is_corrupt_not_grey() -> None:
    data = encode(gradient(800, 1200), "jpg")
    with pytest.raises(errors.PermanentError) as err:
        render(data[: len(data) // 2], DEFAULT_PRESET)
    assert err.value.code == errors.CORRUPT_IMAGE


def test_pixel_bomb_is_refused_from_the_header() -> None:
    bomb = encode(pyvips.Image.black(20000, 20000), "png", compression=9)
    assert len(bomb) < 2_000_000
    with pytest.raises(errors.PermanentError) as err:
        render(bomb, DEFAULT_PRESET, Limits(max_pixels=16_800_000))
    assert err.value.code == errors.TOO_MANY_PIXELS
