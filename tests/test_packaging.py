"""Packaging: the wheel ships the presets and default configs, and a non-editable `pip install .`
in a fresh virtual environment trains a tiny base model from another folder, whose output loads
with `LaVieTextToVideoPipeline.from_pretrained`."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from test_train_data import captioned_manifest

ROOT = Path(__file__).resolve().parents[1]
SKIP = shutil.ignore_patterns(".git", ".venv", "demo-out", "runs", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A copy of the source tree, so building leaves the checkout untouched."""
    out = tmp_path_factory.mktemp("src") / "lavie-toolkit"
    shutil.copytree(ROOT, out, ignore=SKIP)
    return out


def pip(*args: str, cwd: Path, python: Path | None = None) -> None:
    # this environment's pip, offline and without build isolation: the build backend is the
    # setuptools this environment installed (>= 77, as pyproject.toml asks)
    target = ["--python", str(python)] if python else []
    cmd = [sys.executable, "-m", "pip", *target, "--disable-pip-version-check", "-q", *args, "--no-deps", "--no-build-isolation", "--no-index"]
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_wheel_contains_presets_and_configs(source, tmp_path):
    pip("wheel", "-w", str(tmp_path), ".", cwd=source)
    wheel = next(tmp_path.glob("lavie_toolkit-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for stage in ("base", "interp", "vsr"):
        assert f"lavie/configs/model/tiny-{stage}.yaml" in names
    for name in ("base", "interp", "vsr", "long", "lora", "tiny-base", "tiny-long", "tiny-lora"):
        assert f"lavie/configs/train/{name}.yaml" in names
    assert "lavie/configs/curate.yaml" in names and "lavie/configs/train/accelerate/fsdp.yaml" in names
    assert "lavie/pipelines/custom_text_to_video.py" in names and "lavie/train/stages/lora.py" in names
    assert not any(n.startswith(("configs/", "model/", "train/")) for n in names)  # nothing outside the lavie package


def test_fresh_venv_install_trains_and_loads_from_another_folder(source, scenes_out, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = next((venv / "lib").glob("python3.*/site-packages"))
    # the heavy dependencies come from this environment's site folders (read only, no .pth run from them)
    deps = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    (site / "zz-deps.pth").write_text("\n".join(deps) + "\n")
    python = venv / "bin" / "python"
    pip("install", ".", cwd=source, python=python)

    work = tmp_path / "elsewhere"
    work.mkdir()
    clips = captioned_manifest(scenes_out, work / "captioned.parquet")
    train = subprocess.run([str(venv / "bin" / "lavie-train"), "--stage", "base", "-c", "tiny-base", "output_dir=run",
                            f"data.sources=[{{name: clips, manifest: '{clips}', kind: video}}]", "data.n_images=0",
                            "train.max_steps=2", "checkpoint.every=100", "logging.report_to=none"],
                           cwd=work, capture_output=True, text=True, timeout=600)
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    script = ("import lavie, torch; from lavie.pipelines import LaVieTextToVideoPipeline;"
              "pipe = LaVieTextToVideoPipeline.from_pretrained('run/final');"
              "frames = pipe('a red bus', num_frames=2, num_inference_steps=1, generator=torch.Generator().manual_seed(0)).frames;"
              "print(lavie.__file__, frames.shape)")
    sample = subprocess.run([str(python), "-c", script], cwd=work, capture_output=True, text=True, timeout=300)
    assert sample.returncode == 0, sample.stderr[-3000:]
    installed, shape = sample.stdout.strip().splitlines()[-1].split(" ", 1)
    assert Path(installed).is_relative_to(venv)  # the wheel's copy, not the checkout
    assert shape == "(1, 2, 16, 16, 3)"
