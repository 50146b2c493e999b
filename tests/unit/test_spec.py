import json
from pathlib import Path

import pytest

from processors.presets import load_presets
from processors.spec import DEFAULT_PRESET, Preset, SpecError, Watermark, parse_outputs
from streams.settings import ConfigError, load

EXAMPLE = Path(__file__).parents[2] / "config" / "presets.example.toml"


def test_custom_outputs_become_a_preset_versioned_by_their_content() -> None:
    spec = [{"name": "square", "width": 300, "height": 300, "fit": "cover",
             "gravity": "center", "format": "webp", "quality": 70,
             "ops": [{"op": "rotate", "angle": "90"}, {"op": "blur", "sigma": 1}]}]
    preset = parse_outputs(spec)
    (square,) = preset.renditions
    assert (square.width, square.height, square.fit, square.gravity) == (300, 300, "cover",
                                                                         "centre")
    assert [op.op for op in square.geometry_ops] == ["rotate"]
    assert [op.op for op in square.pixel_ops] == ["blur"]
    assert parse_outputs(json.dumps(spec)).version == preset.version
    spec[0]["quality"] = 71
    assert parse_outputs(spec).version != preset.version


@pytest.mark.parametrize(("outputs", "reason"), [
    ("[not json", "not valid JSON"),
    ({"name": "x"}, "expected a list"),
    ([{"name": "x", "width": 10, "format": "gif"}], "outputs.0: format"),
    ([{"name": "x", "width": 10, "fit": "cover"}], "needs width and height"),
    ([{"name": "x", "fit": "height", "width": 10}], "needs height"),
    ([{"name": "x", "width": 0}], "outputs.0: width"),
    ([{"name": "x", "width": 20_000}], "outputs.0: width"),
    ([{"name": "x", "width": 10, "quality": 101}], "quality"),
    ([{"name": "no spaces", "width": 10}], "outputs.0: name"),
    ([{"name": "x", "width": 10, "colour": "red"}], "Extra inputs"),
    ([{"name": "x", "width": 10, "background": "white"}], "#rrggbb"),
    ([{"name": "x", "width": 10, "ops": [{"op": "explode"}]}], "ops.0"),
    ([{"name": "x", "width": 10, "ops": 5}], "outputs.0: ops"),
    (["thumb"], "outputs.0"),
    ([{"name": "x", "width": 10, "ops": [{"op": "blur", "sigma": 500}]}], "sigma"),
    ([{"name": "x", "width": 10, "ops": [{"op": "watermark"}]}], "exactly one of text or logo"),
    ([{"name": "x", "width": 10, "ops": [{"op": "watermark", "logo": "/etc/passwd"}]}],
     "preset files only"),
    ([{"name": "x", "width": 10}, {"name": "x", "width": 20}], "duplicate rendition names"),
    ([{"name": f"r{i}", "width": 10} for i in range(13)], "at most 12"),
])
def test_invalid_outputs_are_refused_with_a_reason(outputs: object, reason: str) -> None:
    with pytest.raises(SpecError, match=reason):
        parse_outputs(outputs)


def test_the_example_file_reproduces_the_per_source_presets() -> None:
    presets = load_presets(EXAMPLE)
    assert presets["cover"] == DEFAULT_PRESET
    seen = {name: [(r.name, r.width, r.height, r.format, r.quality) for r in p.renditions]
            for name, p in presets.items() if name in ("dalle", "sora", "stable_diffusion")}
    assert seen == {
        "dalle": [("normal", 1024, 1024, "jpeg", 80), ("high", 2048, 2048, "webp", 95)],
        "sora": [("normal", 1280, 720, "jpeg", 85), ("high", 1920, 1080, "webp", 95)],
        "stable_diffusion": [("normal", 768, 768, "jpeg", 80), ("high", 1536, 1536, "webp", 95)],
    }
    card = presets["social"].renditions[0]
    assert card.fit == "cover" and card.gravity == "attention"
    assert isinstance(card.ops[-1], Watermark) and card.ops[-1].text == "© Example Press"


def test_yaml_presets_and_logo_files_relative_to_the_preset_file(tmp_path: Path) -> None:
    (tmp_path / "marks").mkdir()
    (tmp_path / "marks" / "logo.png").write_bytes(b"\x89PNG fake but read as bytes")
    (tmp_path / "p.yaml").write_text(
        "presets:\n"
        "  branded:\n"
        "    version: '2'\n"
        "    renditions:\n"
        "      - {name: web, width: 640, format: webp,\n"
        "         ops: [{op: watermark, logo: marks/logo.png, size: 0.2}]}\n")
    branded = load_presets(tmp_path / "p.yaml")["branded"]
    mark = branded.renditions[0].ops[0]
    assert isinstance(mark, Watermark) and mark.logo == b"\x89PNG fake but read as bytes"
    assert branded.version == "2"


@pytest.mark.parametrize(("text", "reason"), [
    ("presets = 3", "expected a 'presets' table"),
    ("[presets.x]\nversion = '1'\nrenditions = []", "renditions"),
    ("[presets.x\n", "not valid"),
    ("[presets.x]\nversion='1'\nrenditions=[{name='a', width=5, ops=[{op='watermark', "
     "logo='missing.png'}]}]", "missing.png"),
])
def test_broken_preset_files_name_the_file_and_the_reason(tmp_path: Path, text: str,
                                                          reason: str) -> None:
    path = tmp_path / "presets.toml"
    path.write_text(text)
    with pytest.raises(SpecError, match=reason) as err:
        load_presets(path)
    assert str(path) in str(err.value)


def test_a_broken_presets_file_stops_start_up_naming_the_variable(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch
                                                                  ) -> None:
    monkeypatch.setenv("PRESETS_FILE", str(tmp_path / "absent.toml"))
    with pytest.raises(ConfigError, match="PRESETS_FILE"):
        load()
    monkeypatch.setenv("PRESETS_FILE", str(EXAMPLE))
    assert load().presets_file == str(EXAMPLE)


def test_presets_are_immutable() -> None:
    with pytest.raises(ValueError, match="frozen"):
        DEFAULT_PRESET.renditions[0].width = 5  # type: ignore[misc]
    assert isinstance(DEFAULT_PRESET, Preset)
