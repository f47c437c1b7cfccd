"""`lavie-eval` end to end on the tiny presets: generate -> fvd -> clipsim -> compare, with a tiny
TorchScript stand-in for I3D and for the UCF-101 classifier and a tiny CLIP saved to disk and
loaded through the real loading code; resume after a kill; sharding; user errors."""

import json
import os
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lavie.eval.cli import main
from lavie.eval.prompts import EvalItem

STEPS = "2"


class StandInI3D(torch.nn.Module):
    """The calling convention of i3d_torchscript.pt with a few cheap layers: (B, 3, T, 224, 224) in [-1, 1] -> (B, 12)."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(3 * 2 * 4 * 4, 12)

    def forward(self, x: torch.Tensor, rescale: bool = True, resize: bool = True, return_features: bool = False) -> torch.Tensor:
        assert return_features and not rescale and not resize, "FVD asks for raw features of preprocessed videos"
        assert x.shape[2] == 16 and x.shape[3] == 224 and x.shape[4] == 224
        assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
        return self.proj(F.adaptive_avg_pool3d(x, (2, 4, 4)).flatten(1))


class StandInClassifier(torch.nn.Module):
    """The calling convention of c3d_ucf101.pt: (B, 3, T, S, S) in [0, 255] -> class probabilities (B, 5)."""

    def __init__(self):
        super().__init__()
        self.head = torch.nn.Linear(3 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert float(x.min()) >= 0.0 and float(x.max()) <= 255.0
        return torch.softmax(self.head(F.adaptive_avg_pool3d(x / 255.0, (1, 4, 4)).flatten(1)) * 10.0, dim=-1)


class LogitsClassifier(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool3d(x / 255.0, (1, 1, 5)).flatten(1)[:, :5] * 4.0  # (B, 5) unnormalised scores


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("eval")


@pytest.fixture(scope="module")
def tiny_base(root) -> Path:
    from lavie.model.tiny import build_tiny_components

    return build_tiny_components(root / "base", stage="base")


@pytest.fixture(scope="module")
def extractors(root) -> dict[str, Path]:
    torch.manual_seed(0)
    paths = {"i3d": root / "i3d_torchscript.pt", "c3d": root / "c3d_ucf101.pt"}
    torch.jit.script(StandInI3D().eval()).save(str(paths["i3d"]))
    torch.jit.script(StandInClassifier().eval()).save(str(paths["c3d"]))
    return paths


@pytest.fixture(scope="module")
def tiny_clip(root) -> Path:
    """A CLIP of the ViT-B/32 architecture family (transformers CLIPModel), tiny, saved like a hub folder."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from lavie.model.tiny import build_tokenizer

    tokenizer = build_tokenizer(16)
    config = CLIPConfig(text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                                     "num_attention_heads": 2, "max_position_embeddings": 16, "bos_token_id": tokenizer.bos_token_id,
                                     "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id},
                        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                                       "image_size": 32, "patch_size": 8}, projection_dim=16)
    torch.manual_seed(0)
    folder = root / "tiny-clip"
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def class_list(root) -> Path:
    path = root / "classInd.txt"
    path.write_text("1 ApplyEyeMakeup\n2 YoYo\n3 PlayingDaf\n")
    return path


@pytest.fixture(scope="module")
def generated(root, tiny_base, class_list) -> Path:
    out = root / "gen"
    assert main(["generate", "--ucf101", str(class_list), "--samples-per-prompt", "2", "--base", str(tiny_base),
                 "-o", str(out), "--steps", STEPS, "--guidance-scale", "1", "--no-progress"]) == 0
    return out


def read_video(path) -> np.ndarray:
    from lavie.eval.videos import VideoRef, read_clip

    return read_clip(VideoRef(Path(path).stem, str(path)), None)


def test_generate_writes_one_video_per_item_and_the_manifest(generated, tiny_base, class_list, capsys):
    rows = [json.loads(line) for line in (generated / "manifest.jsonl").read_text().splitlines()]
    assert [r["video_id"] for r in rows] == ["ucf000-000", "ucf000-001", "ucf001-000", "ucf001-001", "ucf002-000", "ucf002-001"]
    assert [r["prompt"] for r in rows[::2]] == ["apply eye makeup", "yo yo", "playing daf"]
    assert [r["seed"] for r in rows] == list(range(6)) and all(r["status"] == "ok" for r in rows)
    assert sorted(p.name for p in (generated / "videos").iterdir()) == [f"{r['video_id']}.mp4" for r in rows]
    assert read_video(generated / rows[0]["file"]).shape == (16, 16, 16, 3)
    # two samples of one class differ (their own seeds)
    assert not np.array_equal(read_video(generated / rows[0]["file"]), read_video(generated / rows[1]["file"]))
    settings = json.loads((generated / "generate.json").read_text())
    assert settings["base"] == str(tiny_base.resolve()) and settings["steps"] == 2 and settings["protocol"] == "ucf101"
    # a re-run finds everything done and samples nothing
    before = {p.name: p.stat().st_mtime_ns for p in (generated / "videos").iterdir()}
    assert main(["generate", "--ucf101", str(class_list), "--samples-per-prompt", "2", "--base", str(tiny_base),
                 "-o", str(generated), "--steps", STEPS, "--guidance-scale", "1", "--no-progress"]) == 0
    assert "6 were done, 0 sampled" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in (generated / "videos").iterdir()} == before


def write_shifted(generated: Path, out: Path, shift: int) -> Path:
    """The generated videos, brighter by `shift` grey levels, as a plain folder of mp4s."""
    from lavie.pipelines import write_mp4

    for path in sorted((generated / "videos").glob("*.mp4")):
        frames = read_video(path).astype(np.int16) + shift
        write_mp4(np.clip(frames, 0, 255).astype(np.uint8), out / path.name, fps=8)
    return out


def test_fvd_of_a_set_with_itself_is_zero_and_a_shifted_set_is_farther(generated, extractors, root, capsys):
    self_report, shifted_report = root / "fvd-self.json", root / "fvd-shifted.json"
    common = ["--i3d", str(extractors["i3d"]), "--is-classifier", str(extractors["c3d"]), "--is-splits", "2", "--no-progress"]
    assert main(["fvd", str(generated), "--real", str(generated), "-o", str(self_report), *common]) == 0
    assert "FVD" in capsys.readouterr().out
    shifted = write_shifted(generated, root / "shifted", 60)
    assert main(["fvd", str(generated), "--real", str(shifted), "-o", str(shifted_report), *common]) == 0
    same, other = json.loads(self_report.read_text()), json.loads(shifted_report.read_text())
    assert other["fvd"] > 0.1
    assert abs(same["fvd"]) < 1e-5 * other["fvd"]  # the same videos: the same statistics, up to sqrtm round-off
    assert same["generated"]["videos"] == same["real"]["videos"] == 6 and same["real"]["read_errors"] == 0
    assert 1.0 <= same["is"]["mean"] <= 5.0 and same["is"]["splits"] == 2 and same["is"] == other["is"]
    assert same["model"]["base"].endswith("base") and same["model"]["seed"] == 0 and same["clip"]["num_frames"] == 16
    assert same["i3d"]["sha256"] and same["versions"]["torch"] and same["versions"]["scipy"]
    assert same["generated"]["settings"]["samples_per_prompt"] == 2 and same["generated"]["expected_videos"] == 6

    # the real set's statistics are cached and reused: the same figure without decoding the real videos
    stats = root / "ucf-real.npz"
    assert main(["fvd", str(generated), "--real", str(shifted), "--real-stats", str(stats), "-o", str(root / "a.json"),
                 "--i3d", str(extractors["i3d"]), "--no-progress"]) == 0
    assert main(["fvd", str(generated), "--real-stats", str(stats), "-o", str(root / "b.json"),
                 "--i3d", str(extractors["i3d"]), "--no-progress"]) == 0
    cached = json.loads((root / "b.json").read_text())
    assert cached["real"]["from_cache"] and cached["fvd"] == pytest.approx(other["fvd"], rel=1e-9)
    # other settings do not reuse it
    assert main(["fvd", str(generated), "--real-stats", str(stats), "--stride", "2", "-o", str(root / "c.json"),
                 "--num-frames", "8", "--i3d", str(extractors["i3d"]), "--no-progress"]) == 2
    assert "other settings" in capsys.readouterr().err

    # --max-videos with a seed: the same subset, and so the same figure, every time
    subset = []
    for name in ("m1.json", "m2.json"):
        assert main(["fvd", str(generated), "--real", str(shifted), "--max-videos", "4", "--seed", "3", "-o", str(root / name),
                     "--i3d", str(extractors["i3d"]), "--no-progress"]) == 0
        subset.append(json.loads((root / name).read_text()))
    assert subset[0]["fvd"] == subset[1]["fvd"] and subset[0]["generated"]["videos"] == 4

    # a classifier that returns logits: named as such, or caught
    torch.jit.script(LogitsClassifier().eval()).save(str(root / "logits.pt"))
    logits = ["fvd", str(generated), "--real-stats", str(stats), "--i3d", str(extractors["i3d"]), "--is-classifier",
              str(root / "logits.pt"), "--is-splits", "2", "--no-progress", "-o", str(root / "logits.json")]
    assert main(logits) == 2 and "--is-output logits" in capsys.readouterr().err
    assert main([*logits, "--is-output", "logits"]) == 0 and 1.0 <= json.loads((root / "logits.json").read_text())["is"]["mean"] <= 5.0
    # the wrong file as I3D: one line naming it
    assert main(["fvd", str(generated), "--real", str(shifted), "--i3d", str(extractors["c3d"]), "--no-progress",
                 "-o", str(root / "wrong.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "c3d_ucf101.pt' failed on a batch" in err

    capsys.readouterr()
    assert main(["compare", str(self_report), str(shifted_report)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert "fvd-self.json" in table[0] and "fvd-shifted.json" in table[0]
    fvd_row = next(line for line in table if line.lstrip("* ").startswith("fvd "))
    assert fvd_row.startswith("* ") and f"{other['fvd']:.4f}" in fvd_row


def test_fvd_and_clipsim_read_a_clips_manifest_with_relative_paths(generated, extractors, tiny_clip, root):
    from lavie.curate.manifest import write_manifest

    folder = root / "corpus"
    write_shifted(generated, folder / "clips", 30)
    rows = [{"clip_id": f"c{i}", "kind": "video", "source_path": f"clips/{p.name}", "clip_path": f"clips/{p.name}", "num_frames": 16,
             "status": "ok", "keep": True, "caption": f"clip number {i}"} for i, p in enumerate(sorted((folder / "clips").glob("*.mp4")))]
    rows.append({"clip_id": "rejected", "kind": "video", "source_path": "gone.mp4", "clip_path": "gone.mp4", "status": "ok", "keep": False})
    rows.append({"clip_id": "broken", "kind": "video", "source_path": "x.mp4", "status": "error", "error": "no video stream"})
    write_manifest(rows, folder / "clips.parquet", "clips")
    assert main(["fvd", str(generated), "--real", str(folder), "-o", str(root / "manifest.json"), "--i3d", str(extractors["i3d"]),
                 "--no-progress"]) == 0
    report = json.loads((root / "manifest.json").read_text())
    assert report["real"]["kind"] == "manifest" and report["real"]["videos"] == 6 and report["real"]["unusable_rows"] == 2
    # real clips scored against their captions
    assert main(["clipsim", str(folder), "--clip-model", str(tiny_clip), "-o", str(root / "real-clipsim.json"), "--no-progress"]) == 0
    scored = json.loads((root / "real-clipsim.json").read_text())
    assert scored["videos"] == 6 and scored["per_video"][0]["prompt"] == "clip number 0"


def test_a_folder_keeps_its_settings_once_it_holds_videos(tmp_path):
    from lavie.eval.errors import InputError
    from lavie.eval.generate import PARTS_DIR, check_settings

    check_settings(tmp_path, {"base": "a", "steps": 50})
    check_settings(tmp_path, {"base": "b", "steps": 50})  # nothing sampled yet: a corrected model path is taken
    (tmp_path / PARTS_DIR).mkdir()
    (tmp_path / PARTS_DIR / "rank-0.jsonl").write_text(json.dumps({"video_id": "v0", "status": "ok", "file": "videos/v0.mp4"}) + "\n")
    assert check_settings(tmp_path, {"base": "b", "steps": 50}) == {"base": "b", "steps": 50}
    with pytest.raises(InputError, match="steps=50, not 20"):
        check_settings(tmp_path, {"base": "b", "steps": 20})


def test_clipsim_of_the_generated_set_is_the_trainers_clipsim(generated, tiny_clip, root, capsys):
    from lavie.eval.clipsim import ClipSimilarity
    from lavie.train.validation import ClipSimilarity as TrainerClipSimilarity

    assert TrainerClipSimilarity is ClipSimilarity  # one implementation for validation and evaluation
    out = root / "clipsim.json"
    assert main(["clipsim", str(generated), "--clip-model", str(tiny_clip), "-o", str(out), "--no-progress"]) == 0
    assert "CLIPSIM" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["videos"] == 6 and report["scale_factor"] == 1.0 and len(report["per_video"]) == 6
    scorer = ClipSimilarity(str(tiny_clip))
    rows = [json.loads(line) for line in (generated / "manifest.jsonl").read_text().splitlines()]
    by_hand = [scorer(read_video(generated / r["file"]), r["prompt"]) for r in rows]
    assert report["clipsim"] == pytest.approx(float(np.mean(by_hand)), abs=1e-6)
    assert all(-1.0 <= v["clipsim"] <= 1.0 and v["frames"] == 16 for v in report["per_video"])
    # a frame's similarity is a cosine of unit vectors: the same with the prompt's own embedding by hand
    frames = read_video(generated / rows[0]["file"])
    sims = scorer.frame_similarities(frames, rows[0]["prompt"])
    assert sims.shape == (16,) and scorer(frames, rows[0]["prompt"]) == pytest.approx(float(sims.mean()))
    assert scorer(frames, "a completely different prompt") != pytest.approx(float(sims.mean()), abs=1e-7)


def _generate_in_child(argv):
    torch.set_num_threads(1)  # a forked child keeps clear of the parent's OpenMP thread pool
    os._exit(main(argv))


def test_generate_resumes_after_a_kill_without_duplicates(tiny_base, extractors, tmp_path, capsys):
    import multiprocessing

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"prompt number {i}\n" for i in range(6)))
    out = tmp_path / "gen"
    argv = ["generate", "--prompts", str(prompts), "--base", str(tiny_base), "-o", str(out), "--steps", STEPS,
            "--guidance-scale", "1", "--scheduler", "ddim", "--no-progress"]
    # a forked process already holds torch and the pipelines, so it starts sampling at once; SIGKILL
    # gives it no chance to clean up, as a preempted or OOM-killed job
    child = multiprocessing.get_context("fork").Process(target=_generate_in_child, args=(argv,))
    child.start()
    try:
        deadline = time.monotonic() + 240
        while not list((out / "videos").glob("p0000?.mp4")):
            assert child.is_alive(), "generate ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.join()

    from lavie.eval.generate import read_rows

    recorded = {r["file"] for r in read_rows(out) if r["status"] == "ok"}  # videos whose rows were written before the kill
    done_before = {name: (out / name).stat().st_mtime_ns for name in recorded}
    assert 1 <= len(list((out / "videos").glob("p0000?.mp4"))) < 6
    # an unfinished folder is evaluated with a warning that says so
    assert main(["fvd", str(out), "--real", str(out), "--i3d", str(extractors["i3d"]), "--no-progress"]) in (0, 3)
    assert "of its 6 videos" in capsys.readouterr().err
    assert main(argv) == 0
    videos = sorted(p.name for p in (out / "videos").iterdir())
    assert videos == [f"p{i:05d}.mp4" for i in range(6)]  # every item once, no temp files left
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["video_id"] for r in rows] == [f"p{i:05d}" for i in range(6)] and all(r["status"] == "ok" for r in rows)
    # videos recorded before the kill were kept, not sampled again
    for name, mtime in done_before.items():
        assert (out / name).stat().st_mtime_ns == mtime


def test_sharded_generate_splits_items_and_keeps_failed_prompts_as_rows(tmp_path):
    from lavie.eval.generate import read_rows, run_generate

    items = [EvalItem(f"v{i}", f"prompt {i}", i, 0, 100 + i, str(i)) for i in range(7)]
    calls = []

    def sample(prompt, seed):
        calls.append(prompt)
        if prompt == "prompt 3" and len(calls) < 20:
            raise RuntimeError("CUDA out of memory")
        return np.full((4, 8, 8, 3), seed % 256, np.uint8)

    def write(frames, path, fps, crf):
        np.save(path, frames)  # any writer; here .npy bytes under the .mp4 name
        os.replace(str(path) + ".npy", path)

    # two processes, the second first: each takes items k with k mod 2 == its index
    one = run_generate(items, tmp_path, sample, write, fps=8, process_index=1, num_processes=2, progress=False)
    zero = run_generate(items, tmp_path, sample, write, fps=8, process_index=0, num_processes=2, progress=False)
    assert one["sampled"] + one["errors"] == 3 and zero["sampled"] + zero["errors"] == 4
    assert sorted(calls) == sorted(f"prompt {i}" for i in range(7))
    rows = read_rows(tmp_path)
    assert [r["video_id"] for r in rows] == [f"v{i}" for i in range(7)]
    assert {r["process"] for r in rows} == {0, 1}
    failed = next(r for r in rows if r["video_id"] == "v3")
    assert failed["status"] == "error" and "out of memory" in failed["error"]
    # a re-run retries only the failed prompt
    calls.clear()
    calls.extend(["x"] * 20)
    again = run_generate(items, tmp_path, sample, write, fps=8, progress=False)
    assert again == {"items": 7, "done_before": 6, "sampled": 1, "errors": 0}
    assert all(r["status"] == "ok" for r in read_rows(tmp_path))


@pytest.fixture
def no_model_loading(monkeypatch):
    """User errors must be reported before any model is loaded."""
    import lavie.eval.clipsim
    import lavie.eval.fvd
    import lavie.eval.sampler

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the inputs were checked")

    monkeypatch.setattr(lavie.eval.sampler, "load_sampler", refuse)
    monkeypatch.setattr(lavie.eval.fvd, "TorchScriptVideoNet", refuse)
    monkeypatch.setattr(lavie.eval.clipsim, "ClipSimilarity", refuse)


def test_user_errors_are_one_line_before_any_model_loads(generated, tiny_base, class_list, extractors, tiny_clip, root, tmp_path,
                                                        capsys, no_model_loading):
    missing = tmp_path / "nowhere" / "i3d_torchscript.pt"
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "a.mp4").write_bytes((generated / "videos" / "ucf000-000.mp4").read_bytes())
    gen = ["generate", "--ucf101", str(class_list), "--samples-per-prompt", "2", "--base", str(tiny_base), "-o", str(generated),
           "--guidance-scale", "1"]
    cases = [
        (["fvd", str(generated), "--real", str(generated), "--i3d", str(missing)], [str(missing), "i3d_torchscript.pt", "--i3d"]),
        (["fvd", str(generated), "--real", str(generated), "--i3d", str(extractors["i3d"]), "--is-classifier", str(missing)],
         ["c3d_ucf101.pt", str(missing)]),
        (["fvd", str(tmp_path / "no-set"), "--real", str(generated), "--i3d", str(extractors["i3d"])], ["no-set", "not found"]),
        (["fvd", str(generated), "--i3d", str(extractors["i3d"])], ["--real"]),
        (["fvd", str(generated), "--real", str(generated), "--i3d", str(extractors["i3d"]), "--max-videos", "1"], [">= 2"]),
        (["generate", "--ucf101", str(tmp_path / "classInd.txt"), "--base", str(tiny_base), "-o", str(tmp_path / "o")],
         ["class list", "not found"]),
        (["generate", "--prompts", str(class_list), "--base", str(tmp_path / "no-model"), "-o", str(tmp_path / "o")],
         ["no-model", "no such folder"]),
        ([*gen, "--steps", "3"], ["steps=2", "not 3"]),
        (["clipsim", str(generated), "--clip-model", str(tmp_path / "no-clip")], ["no-clip", "clip-vit-base-patch32"]),
        (["clipsim", str(plain), "--clip-model", str(tiny_clip)], ["no prompt"]),
        (["compare", str(tmp_path / "none.json")], ["none.json", "not found"]),
        (["fvd", str(generated), "--real", str(generated), "--i3d", str(extractors["i3d"]), "--device", "gpu0",
          "-o", str(tmp_path / "r.json")], ["--device 'gpu0'"]),
    ]
    for argv, needles in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith(f"lavie-eval {argv[0]}: error: "), err
        for needle in needles:
            assert needle in err, (needle, err)


def test_too_few_videos_is_exit_3(generated, extractors, tmp_path, capsys):
    plain = tmp_path / "one"
    plain.mkdir()
    (plain / "a.mp4").write_bytes((generated / "videos" / "ucf000-000.mp4").read_bytes())
    (plain / "broken.mp4").write_bytes(b"not a video")
    assert main(["fvd", str(generated), "--real", str(plain), "--i3d", str(extractors["i3d"]), "--no-progress",
                 "-o", str(tmp_path / "r.json")]) == 3
    err = capsys.readouterr().err
    assert "1 readable videos" in err and "broken.mp4" in err and len(err.strip().splitlines()) == 1


def test_help_is_fast_and_imports_no_torch():
    code = ("import sys\nfrom lavie.eval.cli import main\nfor cmd in (['--help'], ['generate', '--help'], ['fvd', '--help']):\n"
            "    try:\n        main(cmd)\n    except SystemExit as exit:\n        assert exit.code == 0\n"
            "assert 'torch' not in sys.modules, 'torch imported by --help'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "exit status" in result.stdout and "i3d_torchscript.pt" in result.stdout


def test_sampling_defaults_come_from_the_base_folders_recipe(tmp_path):
    from lavie.eval.sampler import base_recipe

    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "LaVieTextToVideoPipeline", "num_inference_steps": 50,
                                                           "guidance_scale": 7.5, "negative_prompt": "", "unet": ["lavie", "VideoUNet"]}))
    assert base_recipe(str(tmp_path)) == {"num_inference_steps": 50, "guidance_scale": 7.5, "negative_prompt": ""}
    assert base_recipe("CompVis/stable-diffusion-v1-4") == {} and base_recipe(str(tmp_path / "none")) == {}


def test_generate_through_the_cascade_and_windows_of_longer_videos(tiny_base, root, tmp_path):
    from lavie.eval.videos import VideoRef, clip_indices, read_clip
    from lavie.model.tiny import build_tiny_components

    interp = build_tiny_components(root / "interp", stage="interp")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red bus\n")
    out = tmp_path / "cascade"
    assert main(["generate", "--prompts", str(prompts), "--base", str(tiny_base), "--interp", str(interp), "-o", str(out),
                 "--steps", STEPS, "--guidance-scale", "1", "--no-progress"]) == 0
    (row,) = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert row["num_frames"] == 61 and row["fps"] == 32  # 16 key frames -> 61, 8 fps -> 32
    video = VideoRef(row["video_id"], str(out / row["file"]))
    full = read_clip(video, None)
    assert full.shape[0] == 61
    # a 16-frame window: the same for the same seed and video, inside the video, consecutive
    window = read_clip(video, 16, clip_start="random", seed=5)
    assert np.array_equal(window, read_clip(video, 16, clip_start="random", seed=5))
    start = next(s for s in range(46) if np.array_equal(full[s : s + 16], window))
    assert clip_indices(61, 16, 1, "random", np.random.default_rng([5, zlib.crc32(video.key.encode())]))[0] == start
    assert clip_indices(61, 16, 3, "center", None) == list(range(7, 53, 3))  # 46 frames spanned, 15 to spare, 7 before
    assert clip_indices(61, 16, 1, "first", None) == list(range(16))
    with pytest.raises(ValueError, match="has 10 frames"):
        clip_indices(10, 16, 1, "first", None)
