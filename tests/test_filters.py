"""The filter stage on the generated samples' clips and on hand-made rows."""

from __future__ import annotations

import pyarrow as pa
import pytest

from lavie.curate import runner
from lavie.curate.config import CurateConfig, ScenesConfig, from_dict
from lavie.curate.filters import CHEAP_FILTERS, FilterConfig, FilterStage, filter_names
from lavie.curate.jobs import run_scenes
from lavie.curate.manifest import conform, read_manifest
from lavie.curate.registry import get_stage, stage_names
from lavie.curate.samples import make_samples


@pytest.fixture(scope="session")
def scenes_clips(tmp_path_factory) -> pa.Table:
    root = tmp_path_factory.mktemp("filters")
    make_samples(root / "raw")
    run_scenes(root / "raw", root / "scenes", CurateConfig(scenes=ScenesConfig(cut="virtual")), progress=False)
    return read_manifest(root / "scenes")


def run_filter(rows: pa.Table, **kwargs) -> pa.Table:
    spec = runner.StageSpec(name="filter", kwargs=kwargs, batch_size=4)
    return conform(pa.concat_tables(list(runner.run_local(rows, spec)), promote_options="permissive"), "clips")


def reasons_by_video(tbl: pa.Table) -> dict[str, list]:
    out: dict[str, list] = {}
    for row in tbl.select(["source_path", "reject_reason"]).to_pylist():
        out.setdefault(row["source_path"].rsplit("/", 1)[-1], []).append(row["reject_reason"])
    return out


def kind_counts(tbl: pa.Table) -> dict[str, int]:
    counts: dict[str, int] = {}
    for keep, reason in zip(tbl.column("keep").to_pylist(), tbl.column("reject_reason").to_pylist()):
        kind = "kept" if keep else reason.split(":", 1)[0]
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def with_column(tbl: pa.Table, name: str, values: list) -> pa.Table:
    if name in tbl.column_names:
        tbl = tbl.drop_columns([name])
    return conform(tbl.append_column(name, pa.array(values)), "clips")


def test_registered():
    assert "filter" in stage_names()
    assert get_stage("filter") is FilterStage
    assert filter_names() == ["resolution", "aspect", "frames", "duration", "aesthetic", "caption_words"]
    assert set(CHEAP_FILTERS) < set(filter_names())
    cheap = FilterStage(**FilterConfig(min_aspect=1.0).stage_kwargs(list(CHEAP_FILTERS)))
    assert [f.name for f in cheap.filters] == ["resolution", "aspect", "frames"]


def test_samples_resolution_and_frames(scenes_clips):
    out = run_filter(scenes_clips, **FilterConfig().stage_kwargs())
    assert out.num_rows == scenes_clips.num_rows
    assert out.column("clip_id").to_pylist() == scenes_clips.column("clip_id").to_pylist()
    by_video = reasons_by_video(out)
    # The 640x360 video: its three long shots fail resolution, its 10-frame shot keeps the
    # reason the scenes stage gave it.
    assert by_video["bars_360p_30.mp4"] == [
        "resolution: short side 360 < 720", "resolution: short side 360 < 720",
        "frames: 10 < 16", "resolution: short side 360 < 720",
    ]
    # Portrait 720x1280 is 720p: its short side is the width.
    assert set(by_video["portrait_ntsc.mp4"]) == {None}
    assert set(by_video["mandel_1080p_24.mp4"]) == {None}
    assert set(by_video["life_720p_25.mp4"]) == {None}
    assert kind_counts(out) == {"kept": 11, "resolution": 3, "frames": 1}


def test_frames_filter_agrees_with_scenes(scenes_clips):
    short = [n < 16 for n in scenes_clips.column("num_frames").to_pylist()]
    assert sum(short) == 1
    scenes_reason = scenes_clips.column("reject_reason").to_pylist()[short.index(True)]
    # Undo the scenes verdict: the frames filter alone must reach the same one, word for word.
    reopened = with_column(scenes_clips, "keep", [True] * scenes_clips.num_rows)
    reopened = with_column(reopened, "reject_reason", [None] * scenes_clips.num_rows)
    out = run_filter(reopened, **FilterConfig(min_short_side=None).stage_kwargs(["frames"]))
    reasons = out.column("reject_reason").to_pylist()
    assert reasons[short.index(True)] == scenes_reason == "frames: 10 < 16"
    assert sum(r is not None for r in reasons) == 1


def test_samples_caption_words(scenes_clips):
    n = scenes_clips.num_rows
    pool = ["sunset", "red car", "a dog runs", "waves crash on the rocks at dawn", "two words", "one"]
    captions = [pool[i % len(pool)] for i in range(n)]
    captions[0] = None  # not captioned yet: the caption filter stays silent
    tbl = with_column(scenes_clips, "caption", captions)
    out = run_filter(tbl, **FilterConfig(min_short_side=None).stage_kwargs())
    expected = []
    for caption, old in zip(captions, scenes_clips.column("reject_reason").to_pylist()):
        words = None if caption is None else len(caption.split())
        if old is not None:
            expected.append(old)
        elif words is not None and words < 3:
            expected.append(f"caption_words: {words} < 3")
        else:
            expected.append(None)
    assert out.column("reject_reason").to_pylist() == expected
    assert out.column("keep").to_pylist() == [e is None for e in expected]
    counts = kind_counts(out)
    assert counts["caption_words"] == sum(1 for e in expected if e and e.startswith("caption_words"))
    assert counts == {"kept": 6, "caption_words": 8, "frames": 1}


def test_through_ray_matches_local(scenes_clips):
    kwargs = FilterConfig().stage_kwargs()
    local = run_filter(scenes_clips, **kwargs)
    spec = runner.StageSpec(name="filter", kwargs=kwargs, batch_size=5)
    blocks = list(runner.map_stage(scenes_clips, spec))
    on_ray = pa.concat_tables(blocks, promote_options="permissive").sort_by("clip_id")
    local = local.sort_by("clip_id")
    for col in ("clip_id", "keep", "reject_reason"):
        assert on_ray.column(col).to_pylist() == local.column(col).to_pylist()


def clip(i: int, **values) -> dict:
    row = {"clip_id": f"c{i}", "kind": "video", "source_path": f"/v/{i}.mp4", "status": "ok",
           "keep": True, "width": 1920, "height": 1080, "num_frames": 48, "fps": 24.0,
           "start_s": 0.0, "end_s": 2.0}
    row.update(values)
    return row


def test_first_reason_and_errors_untouched():
    rows = conform([
        clip(0, width=640, height=360, keep=False, reject_reason="frames: 8 < 16", num_frames=8),
        clip(1, status="error", error="decode failed", keep=False, width=320, height=240),
        clip(2, status="error", error="decode failed", keep=None, width=None, height=None),
        clip(3, width=640, height=360, num_frames=8),  # fails two rules: the first one names it
        clip(4, keep=None),  # undecided rows are judged, and pass
    ], "clips")
    out = FilterStage(**FilterConfig().stage_kwargs())(
        {c: rows.column(c).to_numpy(zero_copy_only=False) for c in rows.column_names})
    assert list(out) == ["keep", "reject_reason"]
    assert list(out["reject_reason"]) == [
        "frames: 8 < 16", None, None, "resolution: short side 360 < 720", None]
    assert list(out["keep"]) == [False, False, None, False, True]


def test_thresholds_from_config_and_off():
    rows = conform([
        clip(0, aesthetic=3.2), clip(1, aesthetic=4.6), clip(2, aesthetic=None), clip(3),
        clip(4, width=1080, height=1920), clip(5, width=2560, height=1080),
        clip(6, start_s=0.0, end_s=0.5), clip(7, start_s=None, end_s=None, num_frames=480, fps=24.0),
        clip(8, kind="image", num_frames=1, fps=None, start_s=None, end_s=None, width=None, height=None),
    ], "clips")
    batch = {c: rows.column(c).to_numpy(zero_copy_only=False) for c in rows.column_names}

    default = FilterStage(**FilterConfig().stage_kwargs())(batch)
    assert list(default["reject_reason"]) == ["aesthetic: 3.20 < 4", None, None, None, None, None,
                                              None, None, None]

    strict = FilterConfig(min_aesthetic=4.8, min_aspect=1.0, max_aspect=2.0, min_seconds=1.0,
                          max_seconds=10.0)
    reasons = list(FilterStage(**strict.stage_kwargs())(batch)["reject_reason"])
    assert reasons == [
        "aesthetic: 3.20 < 4.8", "aesthetic: 4.60 < 4.8", None, None,
        "aspect: 0.562 < 1", "aspect: 2.370 > 2", "duration: 0.50 s < 1 s",
        "duration: 20.00 s > 10 s",
        None,  # an image has no length and, here, no known size: only measured rules apply
    ]

    off = FilterConfig(min_short_side=None, min_frames=None, min_aesthetic=None, min_caption_words=None)
    assert FilterStage(**off.stage_kwargs()).filters == []
    assert list(FilterStage(**off.stage_kwargs())(batch)["keep"]) == [True] * 9


def test_bad_configuration_names_the_key():
    with pytest.raises(ValueError, match="unknown filter 'sharpness'.*resolution"):
        FilterStage(filters=["sharpness"])
    with pytest.raises(ValueError, match="filter.min_aspect"):
        FilterConfig(min_aspect=2.0, max_aspect=1.0)
    with pytest.raises(ValueError, match="filter.min_frames"):
        FilterConfig(min_frames=-1)
    with pytest.raises(ValueError, match="unknown key filter.min_height"):
        from_dict(FilterConfig, {"min_height": 720}, where="filter")
    loaded = from_dict(FilterConfig, {"min_short_side": None, "min_aesthetic": 5}, where="filter")
    assert loaded.min_short_side is None and loaded.min_aesthetic == 5.0
