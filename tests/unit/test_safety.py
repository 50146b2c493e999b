"""Hostile inputs: each gets its stable reason code, fast, in bounded memory."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import pyvips

from processors import errors
from processors.render import ALLOWED_LOADERS, decode, render
from processors.spec import DEFAULT_PRESET, Limits
from tests.images import encode, gradient, solid

SVG = b"<svg xmlns='http://www.w3.org/2000/svg' width='90000' height='90000'/>"


def pixel_bomb() -> bytes:
    return encode(pyvips.Image.black(20000, 20000), "png", compression=9)


def frame_flood() -> bytes:
    tiles = [solid(2, 2, [255 * (i % 2), 0, 0]) for i in range(300)]  # alternating: no merging
    frames = pyvips.Image.arrayjoin(tiles, across=1).copy()
    frames.set_type(pyvips.GValue.gint_type, "page-height", 2)
    return encode(frames, "gif")


def truncated_jpeg() -> bytes:
    data = encode(gradient(800, 1200), "jpg")
    return data[: len(data) // 2]


def truncated_png() -> bytes:
    data = encode(gradient(800, 1200), "png")
    return data[: len(data) * 2 // 3]


def bad_crc_png() -> bytes:
    data = bytearray(encode(gradient(300, 300), "png"))
    data[data.find(b"IDAT") + 20] ^= 0xFF
    return bytes(data)


def deep_wide() -> bytes:
    """4000 x 4000 x 4 bands x 16 bits = 122 MiB decoded, in a few KB of PNG."""
    image = pyvips.Image.black(4000, 4000, bands=4).copy(interpretation="rgb16").cast("ushort")
    return encode(image, "png", compression=9)


HOSTILE = {
    "pixel_bomb": (pixel_bomb, errors.TOO_MANY_PIXELS),
    "frame_flood": (frame_flood, errors.TOO_MANY_FRAMES),
    "truncated_jpeg": (truncated_jpeg, errors.CORRUPT_IMAGE),
    "truncated_png": (truncated_png, errors.CORRUPT_IMAGE),
    "bad_crc_png": (bad_crc_png, errors.CORRUPT_IMAGE),
    "deep_wide": (deep_wide, errors.TOO_MUCH_MEMORY),
    "text_named_jpg": (lambda: b"a text file called cover.jpg\n", errors.UNSUPPORTED_TYPE),
    "svg": (lambda: SVG, errors.UNSUPPORTED_TYPE),
    "jpeg_magic_then_garbage": (lambda: b"\xff\xd8\xff\xe0" + b"\x00" * 50, errors.CORRUPT_IMAGE),
    "empty": (lambda: b"", errors.UNSUPPORTED_TYPE),
}
LIMITS = Limits(max_pixels=16_800_000, max_frames=100, max_memory_mb=64)


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_input_gets_its_reason_code(name: str) -> None:
    make, code = HOSTILE[name]
    data = make()
    assert len(data) < 2_000_000  # every one of them is small on the wire
    with pytest.raises(errors.PermanentError) as err:
        render(data, DEFAULT_PRESET, LIMITS)
    assert err.value.code == code, err.value.message


def test_hostile_inputs_stay_in_bounded_memory(tmp_path: Path) -> None:
    """In a fresh process, all of them together raise peak RSS by less than 100 MiB
    (decoding the pixel bomb alone would take 1.1 GiB)."""
    for name, (make, _) in HOSTILE.items():
        (tmp_path / name).write_bytes(make())
    script = (
        "import json, resource, sys, pathlib\n"
        "from processors.render import render\n"
        "from processors.spec import DEFAULT_PRESET, Limits\n"
        "from processors.errors import PermanentError\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "codes = {}\n"
        "for path in sorted(pathlib.Path(sys.argv[1]).iterdir()):\n"
        "    try:\n"
        "        render(path.read_bytes(), DEFAULT_PRESET, Limits(max_memory_mb=64))\n"
        "    except PermanentError as exc:\n"
        "        codes[path.name] = exc.code\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(json.dumps({'codes': codes, 'grew_kib': after - before}))\n")
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True,
                         capture_output=True, text=True, timeout=60)
    report = json.loads(out.stdout)
    assert report["codes"] == {name: code for name, (_, code) in HOSTILE.items()}
    assert report["grew_kib"] < 100 * 1024


def test_loaders_outside_the_allow_list_are_blocked(tmp_path: Path) -> None:
    # Straight at libvips, past the magic-byte check: the SVG, CSV and matrix loaders are off.
    with pytest.raises(pyvips.Error):
        pyvips.Image.new_from_buffer(SVG, "")
    with pytest.raises(pyvips.Error):
        decode(SVG, 100)
    (tmp_path / "a.csv").write_text("1,2,3\n4,5,6\n")
    (tmp_path / "a.mat").write_text("2 2\n1 2\n3 4\n")
    for path in ("a.csv", "a.mat"):
        with pytest.raises(pyvips.Error):
            pyvips.Image.new_from_file(str(tmp_path / path))
    # ...while each allowed loader's class name is real (a misspelling would be ignored).
    names: list[str] = []

    def collect(gtype: int, a: object, b: object) -> object:
        names.append(pyvips.type_name(gtype))
        return pyvips.ffi.NULL

    pyvips.type_map(pyvips.type_from_name("VipsForeignLoad"), collect)
    assert set(ALLOWED_LOADERS) <= set(names)


def test_limits_are_configurable_up_for_large_scans() -> None:
    scan = encode(gradient(5000, 4000), "jpg", Q=70)  # 20 MP
    with pytest.raises(errors.PermanentError, match="20000000 pixels"):
        render(scan, DEFAULT_PRESET)
    result = render(scan, DEFAULT_PRESET, Limits(max_pixels=25_000_000))
    assert result.renditions[-1].width == 1600
