"""Fit modes, input and output formats, orientation and colour, on generated images."""

import numpy as np
import pytest
import pyvips

import processors.render as render_module
from processors.render import render
from processors.spec import DEFAULT_PRESET, Preset, RenditionSpec, rendition
from tests.images import encode, gradient, solid, ssim, to_array


def one(spec: RenditionSpec, data: bytes) -> pyvips.Image:
    result = render(data, Preset(name="t", version="1", renditions=(spec,)))
    return pyvips.Image.new_from_buffer(result.renditions[0].data, "")


SOURCE = encode(gradient(2000, 3000), "jpg", Q=95)


@pytest.mark.parametrize(("spec", "size"), [
    (dict(width=300, height=300, fit="inside"), (200, 300)),
    (dict(width=300, height=300, fit="cover"), (300, 300)),
    (dict(width=500, fit="width"), (500, 750)),
    (dict(height=600, fit="height"), (400, 600)),
    (dict(height=600), (400, 600)),  # inside with only a height
    (dict(width=4000, fit="width"), (2000, 3000)),  # never enlarged
    (dict(width=4000, height=100, fit="cover"), (2000, 100)),  # the box, capped at the source
])
def test_fit_modes(spec: dict[str, object], size: tuple[int, int]) -> None:
    out = one(RenditionSpec(name="r", **spec), SOURCE)  # type: ignore[arg-type]
    assert (out.width, out.height) == size


def test_enlarge_only_when_asked() -> None:
    small = encode(gradient(100, 150), "png")
    assert one(rendition("r", 400, "png"), small).width == 100
    out = one(rendition("r", 400, "png", enlarge=True), small)
    assert (out.width, out.height) == (400, 600)
    assert ssim(out, gradient(400, 600)) > 0.9


def test_one_decode_serves_every_rendition(monkeypatch: pytest.MonkeyPatch) -> None:
    widths: list[int] = []
    real = render_module.decode

    def counting(data: bytes, width: int) -> pyvips.Image:
        widths.append(width)
        return real(data, width)

    monkeypatch.setattr(render_module, "decode", counting)
    render(SOURCE, DEFAULT_PRESET)
    assert widths == [1600]  # shrink-on-load to the widest rendition, once


@pytest.mark.parametrize("fmt", ["jpg", "png", "webp", "gif", "avif", "tif"])
def test_every_input_format_is_read(fmt: str) -> None:
    source = gradient(600, 900)
    data = encode(source, fmt) if fmt != "avif" else bytes(
        source.heifsave_buffer(compression="av1", Q=80))
    result = render(data, DEFAULT_PRESET)
    assert result.source_format == {"jpg": "jpeg", "tif": "tiff"}.get(fmt, fmt)
    thumb = pyvips.Image.new_from_buffer(result.renditions[0].data, "")
    assert (thumb.width, thumb.height) == (200, 300)
    assert ssim(thumb, source) > 0.85


@pytest.mark.parametrize(("fmt", "loader"), [
    ("jpeg", "jpegload"), ("webp", "webpload"), ("avif", "heifload"), ("png", "pngload")])
def test_every_output_format_is_written(fmt: str, loader: str) -> None:
    out = one(rendition("r", 300, fmt, 80), SOURCE)  # type: ignore[arg-type]
    assert out.get("vips-loader").startswith(loader)
    assert (out.width, out.height) == (300, 450)
    assert ssim(out, gradient(300, 450)) > 0.9


def test_jpeg_is_progressive_and_quality_shrinks_it() -> None:
    high = render(SOURCE, Preset(name="t", version="1",
                                 renditions=(rendition("hi", 800, "jpeg", 95),
                                             rendition("lo", 800, "jpeg", 40)))).renditions
    assert pyvips.Image.new_from_buffer(high[0].data, "").get("interlaced") == 1
    assert len(high[1].data) < len(high[0].data)


# EXIF orientation N: what a viewer does to the stored pixels to show them upright.
VIEW = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, k=-1),
    7: lambda a: np.rot90(a, k=2).transpose(1, 0, 2),
    8: lambda a: np.rot90(a, k=1),
}
# The inverse of each: how a camera stored an upright scene.
STORE = {1: VIEW[1], 2: VIEW[2], 3: VIEW[3], 4: VIEW[4], 5: VIEW[5], 6: VIEW[8], 7: VIEW[7],
         8: VIEW[6]}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_1_to_8(orientation: int) -> None:
    upright = gradient(400, 600)
    array = to_array(upright).astype(np.uint8)
    assert np.array_equal(VIEW[orientation](STORE[orientation](array)), array)
    stored_array = np.ascontiguousarray(STORE[orientation](array))
    stored = pyvips.Image.new_from_array(stored_array).copy(interpretation="srgb")
    stored.set_type(pyvips.GValue.gint_type, "orientation", orientation)
    result = render(encode(stored, "jpg", Q=95), DEFAULT_PRESET)
    assert (result.source_width, result.source_height) == (400, 600)
    thumb = pyvips.Image.new_from_buffer(result.renditions[0].data, "")
    assert (thumb.width, thumb.height) == (200, 300)
    assert ssim(thumb, upright) > 0.9
    pixels = to_array(thumb)
    assert pixels[:20, :20].mean() > 240  # the white marker is top-left again
    assert pixels[150, 190, 0] > pixels[150, 60, 0] + 100  # red grows to the right
    assert pixels[290, 100, 1] > pixels[90, 100, 1] + 100  # green grows downwards


def test_alpha_is_flattened_onto_the_configured_background_for_jpeg_only() -> None:
    transparent = pyvips.Image.black(200, 200, bands=4).copy(interpretation="srgb").cast("uchar")
    data = encode(transparent, "png")
    red = one(rendition("j", 100, "jpeg", background="#ff0000"), data)
    assert red.bands == 3
    assert to_array(red)[50, 50].tolist() == pytest.approx([254, 0, 0], abs=2)
    png = one(rendition("p", 100, "png"), data)
    assert png.bands == 4 and png[3].max() == 0


def test_cmyk_comes_out_as_the_srgb_its_profile_means() -> None:
    source = gradient(300, 300)
    data = encode(source.colourspace("cmyk"), "jpg", Q=95)
    out = pyvips.Image.new_from_buffer(render(data, DEFAULT_PRESET).renditions[0].data, "")
    assert out.interpretation == "srgb" and out.format == "uchar" and out.bands == 3
    # What the CMYK pixels mean through their embedded profile (saturated green is out of
    # the CMYK gamut, so the round trip itself shifts it): the rendition shows that.
    meant = pyvips.Image.new_from_buffer(data, "").icc_transform("srgb").resize(200 / 300)
    assert np.abs(to_array(out) - to_array(meant)).mean() < 6
    assert to_array(out)[5, -5].tolist() == pytest.approx([230, 33, 53], abs=25)  # still red


def test_16_bit_comes_out_as_8_bit_srgb_with_its_colours() -> None:
    source = gradient(300, 300)
    data = encode(source.colourspace("rgb16"), "png")
    assert pyvips.Image.new_from_buffer(data, "").format == "ushort"
    out = pyvips.Image.new_from_buffer(render(data, DEFAULT_PRESET).renditions[0].data, "")
    assert out.interpretation == "srgb" and out.format == "uchar" and out.bands == 3
    assert ssim(out, source) > 0.9
    pixels = to_array(out)
    assert pixels[5, -5].tolist() == pytest.approx([251, 4, 60], abs=8)  # red top-right
    assert pixels[-5, 5].tolist() == pytest.approx([4, 251, 60], abs=8)  # green bottom-left


def test_animated_input_renders_its_first_frame() -> None:
    colours = ([200, 30, 30], [30, 200, 30], [30, 30, 200])
    frames = [solid(60, 90, c) for c in colours]
    animation = pyvips.Image.arrayjoin(frames, across=1).copy()
    animation.set_type(pyvips.GValue.gint_type, "page-height", 90)
    out = one(rendition("r", 60, "png"), encode(animation, "gif"))
    assert (out.width, out.height) == (60, 90)
    assert to_array(out)[45, 30].tolist() == pytest.approx(colours[0], abs=8)


@pytest.mark.parametrize("gravity", ["attention", "entropy"])
def test_smart_crop_keeps_the_salient_region(gravity: str) -> None:
    # A flat grey banner with one busy, colourful patch far to the right.
    banner = solid(1200, 400, [128, 128, 128])
    patch = gradient(200, 200).gaussblur(0.5)
    patch = patch.draw_rect([230, 20, 20], 40, 40, 60, 60, fill=True)
    source = encode(banner.insert(patch, 950, 100), "png")
    square = dict(width=300, height=300, fit="cover", format="png")
    smart = to_array(one(RenditionSpec(name="r", gravity=gravity, **square), source))
    centre = to_array(one(RenditionSpec(name="r", gravity="centre", **square), source))
    assert smart.shape[:2] == centre.shape[:2] == (300, 300)
    assert centre.std() < 1  # the middle is only grey
    assert smart.std() > 20  # the crop found the patch
    assert (smart[:, :, 0] - smart[:, :, 1] > 150).sum() > 200  # red square included
