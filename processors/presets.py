"""Load presets from a TOML or YAML file (the built-in ``cover`` preset is always there).

The file holds one table per preset under ``presets``; see ``presets.example.toml``. A text
watermark is written inline; a logo watermark names an image file, read here, relative to the
preset file, so the specs stay pure data.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import yaml

from processors.spec import DEFAULT_PRESET, Preset, SpecError, parse_preset


def load_presets(path: str | Path | None) -> dict[str, Preset]:
    """The built-in presets, plus (and possibly overridden by) those in ``path``."""
    presets = {DEFAULT_PRESET.name: DEFAULT_PRESET}
    if path is None:
        return presets
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"{file}: cannot read the preset file ({exc.strerror})") from None
    try:
        if file.suffix in (".yaml", ".yml"):
            document = yaml.safe_load(text)
        else:
            document = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise SpecError(f"{file}: not valid {file.suffix.lstrip('.') or 'TOML'}: {exc}") from None
    tables = document.get("presets") if isinstance(document, dict) else None
    if not isinstance(tables, dict) or not tables:
        raise SpecError(f"{file}: expected a 'presets' table with at least one preset")
    for name, table in tables.items():
        try:
            presets[str(name)] = parse_preset(str(name), _read_logos(table, file.parent))
        except SpecError as exc:
            raise SpecError(f"{file}: {exc}") from None
    return presets


def _read_logos(table: Any, base: Path) -> Any:
    """Replace each watermark's ``logo`` path with the file's bytes."""
    if not isinstance(table, dict):
        return table
    renditions = table.get("renditions")
    if not isinstance(renditions, list):
        return table
    out = []
    for spec in renditions:
        if isinstance(spec, dict) and isinstance(spec.get("ops"), list):
            spec = {**spec, "ops": [_logo_bytes(op, base) for op in spec["ops"]]}
        out.append(spec)
    return {**table, "renditions": out}


def _logo_bytes(op: Any, base: Path) -> Any:
    if not isinstance(op, dict) or not isinstance(op.get("logo"), str):
        return op
    path = base / op["logo"]
    try:
        return {**op, "logo": path.read_bytes()}
    except OSError as exc:
        raise SpecError(f"watermark logo {path}: {exc.strerror}") from None
