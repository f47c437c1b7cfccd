"""The filter stage (vectorised Arrow rules) on the generated samples' clips and on hand-made rows."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lavie.curate import runner
from lavie.curate.filters import RULES, FilterConfig, FilterStage, filter_table
from lavie.curate.manifest import ORDER_COLUMN, conform, read_manifest, write_manifest
from lavie.curate.registry import get_stage
from lavie.curate.stage import Resources, Stage


@pytest.fixture(scope="module")
def scenes_clips(scenes_out) -> pa.Table:
    return read_manifest(scenes_out)


def reasons_by_video(tbl: pa.Table) -> dict[str, list]:
    out: dict[str, list] = {}
    for row in tbl.select(["source_path", "reject_reason"]).to_pylist():
        out.setdefault(row["source_path"].rsplit("/", 1)[-1], []).append(row["reject_reason"])
    return out


def with_column(tbl: pa.Table, name: str, values: list) -> pa.Table:
    if name in tbl.column_names:
        tbl = tbl.drop_columns([name])
    return conform(tbl.append_column(name, pa.array(values)), "clips")


def test_registered_once():
    assert get_stage("filter") is FilterStage
    assert list(RULES) == ["resolution", "aspect", "frames", "duration", "motion", "text", "aesthetic",
                           "caption_words"]
    assert FilterStage.RESOURCES.in_process


def test_samples_resolution_and_frames(scenes_clips):
    out = filter_table(scenes_clips, FilterConfig())
    assert out.num_rows == scenes_clips.num_rows
    assert out.column("clip_id").to_pylist() == scenes_clips.column("clip_id").to_pylist()
    by_video = reasons_by_video(out)
    # The 640x360 video: its three long shots fail resolution, its 10-frame shot keeps the
    # reason the scenes stage gave it.
    assert by_video["bars_360p_30.mp4"] == [
        "resolution: short side 360 < 720", "resolution: short side 360 < 720",
        "scene_length: 10 frames < 16", "resolution: short side 360 < 720",
    ]
    # Portrait 720x1280 is 720p: its short side is the width.
    assert set(by_video["portrait_ntsc.mp4"]) == {None}
    assert set(by_video["mandel_1080p_24.mp4"]) == {None}
    # Error rows stay errors and are never kept.
    status = out.column("status").to_pylist()
    assert all(k is False for k, s in zip(out.column("keep").to_pylist(), status) if s == "error")


def test_samples_caption_words(scenes_clips):
    n = scenes_clips.num_rows
    pool = ["sunset", "red car", "a dog runs", "waves crash on the rocks at dawn", "two words", "one"]
    captions = [pool[i % len(pool)] for i in range(n)]
    captions[0] = None  # not captioned yet: the caption filter stays silent
    tbl = with_column(scenes_clips, "caption", captions)
    out = filter_table(tbl, FilterConfig(min_short_side=None))
    expected = []
    for caption, old, status in zip(captions, scenes_clips.column("reject_reason").to_pylist(),
                                    scenes_clips.column("status").to_pylist()):
        words = None if caption is None else len(caption.split())
        if status == "error" or old is not None:
            expected.append(old)
        elif words is not None and words < 3:
            expected.append(f"caption_words: {words} < 3")
        else:
            expected.append(None)
    assert out.column("reject_reason").to_pylist() == expected


def test_through_ray_matches_in_process(scenes_clips):
    local = filter_table(scenes_clips, FilterConfig())
    plan = runner.StagePlan(FilterStage, FilterConfig(), batch_size=5)
    blocks = list(runner.run_on_ray(scenes_clips, [plan], rows_per_block=5))
    on_ray = pa.concat_tables(blocks, promote_options="permissive")
    assert on_ray.column("clip_id").to_pylist() == local.column("clip_id").to_pylist()
    assert on_ray.column("reject_reason").to_pylist() == local.column("reject_reason").to_pylist()


class _Tag(Stage):
    """A stand-in model stage: an actor pool of one CPU per actor that tags the rows it saw."""

    name = "tag"
    RESOURCES = Resources(cpus=1.0, holds_model=True)

    def __call__(self, batch):
        return batch.append_column(f"seen_{id(self)}", pa.array([True] * batch.num_rows))


@pytest.mark.timeout(240)
def test_model_pools_that_ask_for_every_cpu_still_leave_room_for_the_tasks(scenes_clips):
    """Two model stages whose actors ask, together, for every CPU of the cluster, behind a cheap
    task stage: the actors' requests are fitted so the filter tasks feeding them can run (asked
    for as declared, this run waits forever for a CPU)."""
    import ray

    runner.init_ray()
    cpus = int(ray.cluster_resources()["CPU"])
    width = max(1, cpus // 2)
    # A filter between the two keeps them two pools (model stages in a row would share one).
    cheap = runner.StagePlan(FilterStage, FilterConfig(), batch_size=5)
    tag = runner.StagePlan(_Tag, _Tag.Config(), workers=width, batch_size=5)
    plans = [cheap, tag, cheap, tag]
    out = pa.concat_tables(list(runner.run_on_ray(scenes_clips, plans, rows_per_block=5)),
                           promote_options="permissive")
    assert out.column("clip_id").to_pylist() == scenes_clips.column("clip_id").to_pylist()
    assert sum(name.startswith("seen_") for name in out.column_names) >= 2  # rows went through both pools


class _Pid(Stage):
    """A stand-in model stage that records which actor process handled each row."""

    name = "pid"
    RESOURCES = Resources(cpus=1.0, holds_model=True)
    default_batch_size = 4

    def __call__(self, batch):
        import os
        import time

        time.sleep(0.25)  # a model's batch takes a while: both actors are up before the work is gone
        return batch.append_column("pid", pa.array([os.getpid()] * batch.num_rows))


def test_a_manifest_of_one_row_group_is_shared_by_the_whole_pool(tmp_path):
    """A small manifest is one Parquet row group; read as one block it would go whole to one
    actor. Its reads are cut into blocks so every actor of the pool gets a share, in order."""
    import ray

    rows = [{"clip_id": f"c{i:03d}", "kind": "video", "source_path": f"v{i}.mp4", "status": "ok", "keep": True}
            for i in range(96)]
    path = write_manifest(conform(rows, "clips"), tmp_path / "m" / "clips.parquet", "clips")
    assert pq.ParquetFile(path).metadata.num_row_groups == 1
    runner.init_ray()
    source = runner.ManifestSource([str(path)], done={"c005"})
    plans = [runner.StagePlan(FilterStage, FilterConfig(min_short_side=None)),
             runner.StagePlan(_Pid, _Pid.Config(), workers=2)]
    size = runner.block_rows(plans, source.total, ray.cluster_resources())
    assert size < 96 // 2  # at least two blocks for two actors (four per CPU where the total allows)
    out = pa.concat_tables(list(runner.run_on_ray(source, plans)), promote_options="permissive")
    expected = [r["clip_id"] for r in rows if r["clip_id"] != "c005"]
    assert out.column("clip_id").to_pylist() == expected
    assert out.column(ORDER_COLUMN).to_pylist() == [i for i in range(96) if i != 5]
    assert len(set(out.column("pid").to_pylist())) == 2


def test_aspect_duration_and_images():
    rows = conform(pa.table({
        "clip_id": ["a", "b", "c", "d"], "kind": ["video", "video", "image", "video"],
        "source_path": ["x"] * 4, "status": ["ok"] * 4,
        "width": [1920, 720, 1280, None], "height": [1080, 1280, 720, None],
        "num_frames": [50, 300, 1, 20], "fps": [25.0, 25.0, None, 25.0],
    }), "clips")
    out = filter_table(rows, FilterConfig(min_aspect=1.0, max_seconds=10.0, min_short_side=None))
    assert out.column("reject_reason").to_pylist() == [None, "aspect: 0.562 < 1", None, None]
    out = filter_table(rows, FilterConfig(min_seconds=1.0, max_seconds=10.0, min_short_side=None))
    # The image has no length; the unknown-size row passes the size rules and fails its length.
    assert out.column("reject_reason").to_pylist() == [None, "duration: 12 s > 10 s", None, "duration: 0.8 s < 1 s"]


def test_bad_configuration_names_the_key():
    with pytest.raises(ValueError, match="min_short_side"):
        FilterConfig(min_short_side=-1)
    with pytest.raises(ValueError, match="min_aspect"):
        FilterConfig(min_aspect=2.0, max_aspect=1.0)
    with pytest.raises(ValueError, match="min_motion"):
        FilterConfig(min_motion=5.0, max_motion=1.0)
    with pytest.raises(ValueError, match="min_short_sid"):
        FilterConfig(min_short_sid=3)
