"""Curriculum mixing: weight schedules, realised proportions against the schedule, determinism,
and continuity over a resume (of the sampler alone and of a training run)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lavie.train.cli import main as train_main
from lavie.train.curriculum import CurriculumSampler, SourceSpec, WeightSchedule, mix_probabilities
from test_train_data import captioned_manifest

ROOT = Path(__file__).resolve().parents[1]
# WebVid-like source from step 0, a curated corpus ramped in between steps 100 and 300 (LaVie App. C)
WEBVID = [[0, 1.0], [100, 1.0], [300, 0.25]]
CURATED = [[0, 0.0], [100, 0.0], [300, 0.75]]
TOLERANCE = 0.06  # absolute, on a fraction estimated from 400 draws: about 4 binomial standard deviations


def test_weight_schedule_is_piecewise_linear_and_constant_outside():
    schedule = WeightSchedule(WEBVID)
    assert schedule(0) == 1.0 and schedule(100) == 1.0 and schedule(200) == pytest.approx(0.625)
    assert schedule(300) == 0.25 and schedule(10_000) == 0.25
    assert WeightSchedule(0.5)(123) == 0.5
    with pytest.raises(ValueError, match=">= 0"):
        WeightSchedule([[0, -1.0]])
    with pytest.raises(ValueError, match=r"\[step, weight\]"):
        WeightSchedule([[0, 1.0, 2.0]])
    with pytest.raises(ValueError, match="all source weights are zero"):
        mix_probabilities([WeightSchedule(0.0)], 5)


def make_sampler(**kwargs) -> CurriculumSampler:
    videos = [SourceSpec(0, "webvid", WeightSchedule(WEBVID), 50, "video"), SourceSpec(1, "curated", WeightSchedule(CURATED), 30, "video")]
    images = [SourceSpec(2, "laion", WeightSchedule(1.0), 20, "image")]
    return CurriculumSampler(videos, images, **{"batch_size": 4, "n_images": 2, "seed": 7, **kwargs})


def realised_fraction(sampler: CurriculumSampler, steps: range, source: int = 1) -> float:
    picks = [video.source for step in steps for video, _ in sampler.draw(step)]
    return float(np.mean(np.array(picks) == source))


def test_realised_mix_follows_the_schedule():
    sampler = make_sampler()
    assert realised_fraction(sampler, range(0, 100)) == 0.0  # curated weight 0 before the ramp
    for lo in (120, 180, 240, 300, 400):
        steps = range(lo, lo + 100)  # 400 clips per window
        expected = np.mean([mix_probabilities([WeightSchedule(WEBVID), WeightSchedule(CURATED)], s)[1] for s in steps])
        assert abs(realised_fraction(sampler, steps) - expected) < TOLERANCE, lo
    # image slots only ever come from image sources, clip slots from clip sources
    batch = sampler.draw(250)
    assert all(v.kind == "video" and all(i.kind == "image" for i in imgs) and len(imgs) == 2 for v, imgs in batch)


def test_draws_depend_on_seed_step_and_rank_only():
    a, b = make_sampler(), make_sampler()
    assert a.draw(57, 0) == b.draw(57, 0)
    assert make_sampler(seed=8).draw(57) != a.draw(57)
    assert make_sampler(rank=1).draw(57) != a.draw(57)
    assert a.draw(57, 1) != a.draw(57, 0)


def test_sampler_resumes_where_it_stopped():
    straight = make_sampler(accumulation=2, end_step=40)
    full = list(straight)
    first = make_sampler(accumulation=2, end_step=40)
    head = []
    for batch in first:
        head.append(batch)
        if len(head) == 2 * 15:
            break
    first.start_step = 15
    state = first.state_dict()
    resumed = make_sampler(accumulation=2, end_step=40)
    resumed.load_state_dict(state)
    assert head + list(resumed) == full
    with pytest.raises(ValueError, match="seed"):
        make_sampler(seed=1).load_state_dict(state)


def test_training_run_mix_follows_schedule_and_continues_after_resume(scenes_out, tmp_path):
    from accelerate.state import AcceleratorState, GradientState

    manifest = captioned_manifest(scenes_out, tmp_path / "captioned.parquet")
    ramp = "[[0, 0.0], [6, 0.0], [12, 1.0]]"
    sources = (f"data.sources=[{{name: early, manifest: '{manifest}', kind: video, weight: 1.0}}, "
               f"{{name: late, manifest: '{manifest}', kind: video, weight: {ramp}}}]")
    common = ["--stage", "base", "-c", str(ROOT / "configs/train/tiny-base.yaml"), f"output_dir={tmp_path / 'run'}", sources,
              "data.n_images=0", "data.batch_size=4", "data.num_frames=2", "checkpoint.every=100", "logging.every=3",
              "ema.enabled=false"]
    assert train_main([*common, "train.max_steps=9"]) == 0
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    assert train_main([*common, "train.max_steps=18", "--resume", "latest"]) == 0

    log = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in log] == [3, 6, 9, 12, 15, 18]
    assert log[0]["mix/late"] == 0.0 and log[1]["mix/late"] == 0.0  # not ramped in yet
    # the realised mix before and after the resume is exactly what an uninterrupted sampler draws
    expected = CurriculumSampler([SourceSpec(0, "early", WeightSchedule(1.0), 17, "video"),
                                  SourceSpec(1, "late", WeightSchedule(json.loads(ramp)), 17, "video")], [],
                                 batch_size=4, seed=0, end_step=18)
    picks = np.array([video.source for batch in expected for video, _ in batch])  # 4 clips per step
    for window, record in enumerate(log):
        assert record["mix/late"] == pytest.approx(picks[12 * window : 12 * window + 12].mean())
    assert log[-1]["mix_total/late"] == (picks == 1).sum() and log[-1]["mix_total/early"] == (picks == 0).sum()
    assert log[-1]["mix/late"] > 0
