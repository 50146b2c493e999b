"""``covers render`` on local files: outputs, summary, contact sheet, failures."""

from pathlib import Path

import pyvips
from typer.testing import CliRunner

from streams.cli import cli
from tests.images import encode, gradient, ssim

EXAMPLE = Path(__file__).parents[2] / "config" / "presets.example.toml"


def files(tmp_path: Path) -> list[str]:
    (tmp_path / "tall.jpg").write_bytes(encode(gradient(1200, 1800), "jpg"))
    (tmp_path / "wide.png").write_bytes(encode(gradient(900, 600, alpha=True), "png"))
    (tmp_path / "notes.jpg").write_bytes(b"this is a text file")
    return [str(tmp_path / name) for name in ("tall.jpg", "wide.png", "notes.jpg")]


def test_render_writes_renditions_a_table_and_a_contact_sheet(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["render", *files(tmp_path), "-o", str(out)])
    assert result.exit_code == 1, result.output  # one file is not an image
    assert "unsupported_type" in result.output and "1 of 3 failed" in result.output
    thumb = pyvips.Image.new_from_file(str(out / "tall" / "thumb.jpg"))
    assert (thumb.width, thumb.height) == (200, 300)
    assert ssim(thumb, gradient(1200, 1800)) > 0.9
    assert pyvips.Image.new_from_file(str(out / "wide" / "medium.webp")).width == 800
    assert not (out / "notes").exists()

    sheet = pyvips.Image.new_from_file(str(out / "contact-sheet.png"))
    # two rendered inputs, each a row of source + 3 renditions + LQIP + colour swatch
    assert 2 * 240 < sheet.height < 2 * 300
    assert sheet.width > 5 * 200
    page = (out / "index.html").read_text()
    assert page.count("<tr>") == 3 and "tall/thumb.jpg" in page and "unsupported_type" in page
    assert "data:image/webp;base64," in page


def test_render_with_a_preset_from_the_file_or_custom_outputs(tmp_path: Path) -> None:
    source = files(tmp_path)[:1]
    runner = CliRunner()
    result = runner.invoke(cli, ["render", *source, "-o", str(tmp_path / "a"), "--preset",
                                 "social", "--presets-file", str(EXAMPLE), "--no-contact-sheet"])
    assert result.exit_code == 0, result.output
    card = pyvips.Image.new_from_file(str(tmp_path / "a" / "tall" / "card.jpg"))
    assert (card.width, card.height) == (600, 600)
    assert not (tmp_path / "a" / "contact-sheet.png").exists()

    result = runner.invoke(cli, ["render", *source, "-o", str(tmp_path / "b"), "--output",
                                 "name=strip,width=300,height=100,fit=cover,format=png",
                                 "--output", '{"name": "tiny", "height": 60, "format": "webp"}'])
    assert result.exit_code == 0, result.output
    strip = pyvips.Image.new_from_file(str(tmp_path / "b" / "tall" / "strip.png"))
    tiny = pyvips.Image.new_from_file(str(tmp_path / "b" / "tall" / "tiny.webp"))
    assert (strip.width, strip.height, tiny.width, tiny.height) == (300, 100, 40, 60)


def test_bad_options_exit_2_with_the_reason(tmp_path: Path) -> None:
    source = files(tmp_path)[:1]
    runner = CliRunner()
    for args, reason in (
            (["--preset", "nope"], "no preset named 'nope'"),
            (["--output", "name=x,width=10,fit=cover"], "needs width and height"),
            (["--output", "width"], "not key=value"),
            (["--preset", "cover", "--output", "name=x,width=10"], "not both")):
        result = runner.invoke(cli, ["render", *source, "-o", str(tmp_path / "o"), *args])
        assert result.exit_code == 2 and reason in result.output, (args, result.output)


def test_inputs_sharing_a_stem_get_their_own_folders(tmp_path: Path) -> None:
    (tmp_path / "cover.jpg").write_bytes(encode(gradient(400, 600), "jpg"))
    (tmp_path / "cover.png").write_bytes(encode(gradient(600, 400), "png"))
    result = CliRunner().invoke(cli, ["render", str(tmp_path / "cover.jpg"),
                                      str(tmp_path / "cover.png"), "-o", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    tall = pyvips.Image.new_from_file(str(tmp_path / "o" / "cover.jpg" / "thumb.jpg"))
    wide = pyvips.Image.new_from_file(str(tmp_path / "o" / "cover.png" / "thumb.jpg"))
    assert (tall.width, tall.height, wide.width, wide.height) == (200, 300, 200, 133)
