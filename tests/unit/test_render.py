import pyvips

from processors.render import render
from processors.spec import DEFAULT_PRESET
from tests.images import encode, gradient, ssim


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
    for rendered in render(data, DEFAULT_PRESET).renditions:
        out = pyvips.Image.new_from_buffer(rendered.data, "")
        assert "exif-data" not in out.get_fields()
        assert b"Somebody" not in rendered.data
