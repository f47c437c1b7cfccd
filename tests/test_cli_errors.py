"""Every user error of the three CLIs: one line, the documented exit status, before any work.

The table runs each CLI in-process; nothing in it gets as far as starting Ray, building a model
or drawing a sample (the expensive entry points are replaced by tripwires).
"""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest

from lavie.curate.cli import main as curate_main
from lavie.curate.manifest import conform, write_manifest
from lavie.pipelines.cli import main as sample_main
from lavie.train.cli import main as train_main

# What the train CLI imports to resolve a stage (the stage modules, with their module-level names
# from lavie.pipelines.loading) is imported here, before the tripwires: the test is then the same
# whatever ran before it.
from lavie.train.stages import get_stage, stage_names  # noqa: E402

for _stage in stage_names():
    get_stage(_stage)

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs/train/tiny-base.yaml")


@pytest.fixture
def files(tmp_path):
    (tmp_path / "raw").mkdir()
    (tmp_path / "bad.yaml").write_text("scenes:\n  min_frames: 3\n   detector: [content\n")
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "bad.parquet").write_text("not parquet")
    rows = [{"clip_id": "c0", "kind": "video", "source_path": "v.mp4", "status": "ok", "keep": True}]
    write_manifest(conform(rows, "clips"), tmp_path / "uncaptioned" / "clips.parquet", "clips")
    run = tmp_path / "earlier-run"
    (run / "checkpoints" / "checkpoint-4" / "unet").mkdir(parents=True)
    (run / "config.yaml").write_text("stage: base\n")
    return tmp_path


class _Tripwire(types.ModuleType):
    """Stands in for a module whose import means expensive work has started."""

    def __getattr__(self, name):
        if name.startswith("__"):  # module metadata (inspect walks sys.modules for __file__): not a use
            raise AttributeError(name)
        raise AssertionError(f"{self.__name__}.{name} used before the user error was reported")


def _tripwires(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("Ray started before the user error was reported")

    monkeypatch.setattr("lavie.curate.runner.init_ray", boom)
    # Model code is never imported on these paths: stand-ins fail loudly if it is.
    for name in ("lavie.train.loop", "lavie.pipelines.loading", "lavie.pipelines.cascade"):
        monkeypatch.setitem(sys.modules, name, _Tripwire(name))


def _sources(manifest) -> str:
    return f"data.sources=[{{name: clips, manifest: '{manifest}', kind: video}}]"


CASES = [
    # (cli, argv with {tmp} for the temp folder, exit status, words the line must hold)
    ("curate", ["scenes", "{tmp}/raw", "-o", "{tmp}/out", "-c", "{tmp}/bad.yaml"], 2, "line 3, column 12: not valid YAML"),
    ("curate", ["scenes", "{tmp}/raw", "-o", "{tmp}/out", "-c", "{tmp}/missing.yaml"], 2, "config file {tmp}/missing.yaml does not exist"),
    ("curate", ["scenes", "{tmp}/raw", "-o", "{tmp}/out", "--set", "stages.scenes.min_frame=3"], 2,
     "stages[0] (scenes): unknown key 'min_frame'"),
    ("curate", ["scenes", "{tmp}/raw", "-o", "{tmp}/out", "--set", "scenes.min_frames=3"], 2, "unknown key 'scenes'"),
    ("curate", ["scenes", "{tmp}/nowhere", "-o", "{tmp}/out"], 2, "raw video folder {tmp}/nowhere does not exist"),
    ("curate", ["scenes", "{tmp}/raw"], 2, "the following arguments are required: -o/--out"),
    ("curate", ["run", "{tmp}/raw", "-o", "{tmp}/a_file/out"], 2, "cannot be created or written to"),
    ("curate", ["filter", "{tmp}/bad.parquet", "-o", "{tmp}/out", "--cheap-only"], 2, "{tmp}/bad.parquet is not a readable Parquet file"),
    ("train", ["--stage", "base", "-c", "{tmp}/bad.yaml"], 2, "line 3, column 12: not valid YAML"),
    ("train", ["--stage", "base", "-c", TINY, "train.max_step=3"], 2, "unknown key train.max_step;"),
    ("train", ["--stage", "base", "-c", TINY, "output_dir={tmp}/new", "data.n_images=0", _sources("{tmp}/missing")], 2,
     "manifest {tmp}/missing does not exist"),
    ("train", ["--stage", "base", "-c", TINY, "output_dir={tmp}/new", "data.n_images=0", _sources("{tmp}/uncaptioned")], 2,
     "has no caption column"),
    ("train", ["--stage", "base", "-c", TINY, "model.pretrained={tmp}/sd"], 2, "model.tiny=true builds random tiny components"),
    ("train", ["--stage", "base", "-c", TINY, "output_dir={tmp}/earlier-run", "data.n_images=0", _sources("{tmp}/uncaptioned")], 2,
     "already holds a run (1 checkpoints); pass --resume latest"),
    ("train", ["--stage", "base", "-c", TINY, "output_dir={tmp}/new", "--resume", "latest"], 2, "--resume latest: no checkpoint"),
    ("train", ["--stag", "base", "--bogus"], 2, "unrecognized arguments: --bogus"),
    ("sample", ["a cat", "--base", "{tmp}/earlier-run", "-o", "{tmp}/a_file/out.mp4"], 2, "-o {tmp}/a_file/out.mp4 cannot be written"),
    ("sample", ["a cat", "--base", "{tmp}/earlier-run", "-o", "{tmp}/raw"], 2, "-o {tmp}/raw is a folder"),
    ("sample", ["a cat", "--base", "{tmp}/no-model", "-o", "{tmp}/v.mp4"], 2, "--base {tmp}/no-model: no such model folder"),
    ("sample", ["a cat", "--base", "{tmp}/earlier-run", "--num-frames", "0", "-o", "{tmp}/v.mp4"], 2, "--num-frames 0: must be at least 1"),
    ("sample", ["a cat", "--base", "{tmp}/earlier-run", "--steps", "many", "-o", "{tmp}/v.mp4"], 2, "invalid int value: 'many'"),
]


@pytest.mark.parametrize("cli,argv,status,words", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_user_error_is_one_line_with_its_status(cli, argv, status, words, files, monkeypatch, capsys):
    _tripwires(monkeypatch)
    argv = [a.replace("{tmp}", str(files)) for a in argv]
    main = {"curate": curate_main, "train": train_main, "sample": sample_main}[cli]
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == status, err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"lavie-{cli}") and words.replace("{tmp}", str(files)) in lines[0], lines[0]


def test_sample_help_loads_no_model_library():
    code = ("import sys\nfrom lavie.pipelines.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]\n"
            "print('HEAVY', heavy, file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "exit status:" in proc.stdout
    assert "HEAVY []" in proc.stderr, proc.stderr


def test_sample_scheduler_choices_match_the_pipelines():
    from lavie.pipelines.cli import SCHEDULER_NAMES
    from lavie.pipelines.common import SCHEDULERS

    assert sorted(SCHEDULER_NAMES) == sorted(SCHEDULERS)


def test_train_resume_says_what_it_continues(files):
    from lavie.train.config import load_train_config
    from lavie.train.preflight import check_output_dir

    config = load_train_config(TINY, [f"output_dir={files}/earlier-run"], stage="base")
    assert check_output_dir(config, "latest") == f"resuming the run in {files}/earlier-run from its latest checkpoint"
