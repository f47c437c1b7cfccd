"""The evaluation maths and inputs on their own: the Fréchet distance against closed forms and an
independent eigendecomposition, the Inception Score on known probabilities, the FVD preprocessing
frame by frame on a video with known content, the prompt sets."""

import json

import numpy as np
import pytest
import torch

from lavie.eval.errors import InputError
from lavie.eval.frechet import FeatureStats, frechet_distance, inception_score
from lavie.eval.preprocess import crop_box, preprocess_video
from lavie.eval.prompts import build_items, class_words
from lavie.eval.videos import VideoRef, read_clip

# --- Fréchet distance ------------------------------------------------------------------------------


def random_spd(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T + d * np.eye(d)


def test_frechet_distance_closed_form_for_commuting_gaussians():
    # S1 = Q diag(a) Q^T and S2 = Q diag(b) Q^T commute, so Tr (S1 S2)^(1/2) = sum sqrt(a b):
    # d^2 = |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2
    rng = np.random.default_rng(0)
    d = 16
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    a, b = rng.uniform(0.1, 4.0, d), rng.uniform(0.1, 4.0, d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = frechet_distance(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T)
    assert got == pytest.approx(expected, rel=1e-6)
    # one dimension: (m1 - m2)^2 + (s1 - s2)^2 for standard deviations s1, s2
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4.0 + 1.0, rel=1e-12)
    # a Gaussian against itself
    sigma = random_spd(rng, d)
    assert abs(frechet_distance(mu1, sigma, mu1, sigma)) < 1e-8 * np.trace(sigma)


def test_frechet_distance_matches_an_independent_computation_on_random_features():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 12)) @ rng.normal(size=(12, 12))
    y = rng.normal(0.5, 1.5, size=(250, 12)) @ rng.normal(size=(12, 12))
    a, b = FeatureStats.from_features(x), FeatureStats.from_features(y)
    assert np.allclose(a.sigma, np.cov(x, rowvar=False)) and a.count == 300
    # independent: Tr (S1 S2)^(1/2) = Tr (S1^(1/2) S2 S1^(1/2))^(1/2) = sum of the square roots of the
    # eigenvalues of the symmetric matrix S1^(1/2) S2 S1^(1/2), with S1^(1/2) from eigh
    w, v = np.linalg.eigh(a.sigma)
    root1 = v @ np.diag(np.sqrt(w)) @ v.T
    inner = np.linalg.eigvalsh(root1 @ b.sigma @ root1)
    expected = np.sum((a.mu - b.mu) ** 2) + np.trace(a.sigma) + np.trace(b.sigma) - 2 * np.sum(np.sqrt(inner))
    got = frechet_distance(a.mu, a.sigma, b.mu, b.sigma)
    assert got == pytest.approx(expected, rel=1e-6)
    # and the textbook formula written out with scipy.linalg.sqrtm on the raw features
    from scipy.linalg import sqrtm

    mu_x, mu_y, s_x, s_y = x.mean(0), y.mean(0), np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    textbook = (mu_x - mu_y) @ (mu_x - mu_y) + np.trace(s_x + s_y - 2 * sqrtm(s_x @ s_y).real)
    assert got == pytest.approx(textbook, rel=1e-6)


def test_frechet_distance_of_a_rank_deficient_set_with_itself_is_zero():
    rng = np.random.default_rng(2)
    stats = FeatureStats.from_features(rng.normal(size=(5, 32)))  # 5 videos, 32 features: rank 4
    assert abs(frechet_distance(stats.mu, stats.sigma, stats.mu, stats.sigma)) < 1e-4 * np.trace(stats.sigma)
    with pytest.raises(ValueError, match="at least 2"):
        FeatureStats.from_features(np.zeros((1, 4)))


def test_inception_score_on_known_probabilities():
    confident = np.tile(np.eye(5), (4, 1))  # every class predicted with certainty, classes balanced in each split
    mean, std = inception_score(confident, splits=4)
    assert mean == pytest.approx(5.0, rel=1e-9) and std == pytest.approx(0.0, abs=1e-9)
    uniform = np.full((20, 5), 0.2)  # no information: IS = 1
    assert inception_score(uniform, splits=2)[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 10"):
        inception_score(uniform[:5], splits=10)


# --- preprocessing ---------------------------------------------------------------------------------


def test_crop_box_is_the_papers_for_320x512_and_proportional_otherwise():
    assert crop_box(320, 512) == (25, 121, 270)  # 270x270 centred in 320x512
    assert crop_box(512, 320) == (121, 25, 270)
    assert crop_box(240, 320) == (18, 58, 203)  # UCF-101's own frames: 240 * 27/32 = 202.5 -> 203
    assert crop_box(16, 16) == (1, 1, 14)


def known_video(t=6, h=320, w=512):
    """Frames whose 270x270 centre square holds four flat quadrants (grey levels that change with
    the frame index) and whose outside is black: any offset of the crop box shows at the edges."""
    top, left, side = 25, 121, 270
    frames = np.zeros((t, h, w, 3), np.uint8)
    levels = np.zeros((t, 2, 2), np.uint8)
    for i in range(t):
        for r in range(2):
            for c in range(2):
                levels[i, r, c] = 40 + 25 * i + 50 * r + 25 * c
                frames[i, top + r * 135 : top + (r + 1) * 135, left + c * 135 : left + (c + 1) * 135] = levels[i, r, c]
    return frames, levels


def test_preprocess_exact_on_arrays():
    frames, levels = known_video()
    x = preprocess_video(frames)
    assert x.shape == (3, 6, 224, 224) and x.dtype == torch.float32
    for i in range(6):
        for r in range(2):
            for c in range(2):
                # a quadrant's interior (away from the blend at the middle) is its level, rescaled to [-1, 1]
                quadrant = x[:, i, r * 112 + 4 : (r + 1) * 112 - 4, c * 112 + 4 : (c + 1) * 112 - 4]
                assert torch.allclose(quadrant, torch.tensor(levels[i, r, c] / 127.5 - 1.0, dtype=torch.float32), atol=1e-5)
    # the outermost rows and columns are pure quadrant levels: the box takes nothing of the black outside
    for i in range(6):
        level = lambda r, c: torch.tensor(levels[i, r, c] / 127.5 - 1.0, dtype=torch.float32)  # noqa: E731
        assert torch.allclose(x[:, i, 0, :100], level(0, 0), atol=1e-5) and torch.allclose(x[:, i, -1, 124:], level(1, 1), atol=1e-5)
        assert torch.allclose(x[:, i, :100, 0], level(0, 0), atol=1e-5) and torch.allclose(x[:, i, 124:, -1], level(1, 1), atol=1e-5)
    # a box one pixel off would blend the black border into the edge
    shifted = preprocess_video(np.ascontiguousarray(np.roll(frames, 1, axis=2)))
    assert (shifted[:, :, :100, 0] < x[:, :, :100, 0] - 0.05).all()
    white, black = np.full((1, 320, 512, 3), 255, np.uint8), np.zeros((1, 320, 512, 3), np.uint8)
    assert preprocess_video(white).max() == pytest.approx(1.0) and preprocess_video(black).min() == pytest.approx(-1.0)


def test_preprocess_frame_by_frame_on_an_encoded_video(tmp_path):
    from lavie.pipelines import write_mp4

    frames, levels = known_video()
    path = write_mp4(frames, tmp_path / "known.mp4", fps=8, crf=0)
    decoded = read_clip(VideoRef("known", str(path)), num_frames=6)
    assert decoded.shape == frames.shape
    x = preprocess_video(decoded)
    for i in range(6):  # frame order kept, each frame's quadrants within a grey level or two of the truth
        for r in range(2):
            for c in range(2):
                quadrant = x[:, i, r * 112 + 8 : (r + 1) * 112 - 8, c * 112 + 8 : (c + 1) * 112 - 8]
                assert (quadrant.mean() - (levels[i, r, c] / 127.5 - 1.0)).abs() < 3 / 127.5
    assert x.min() >= -1.0 and x.max() <= 1.0
    # a window of 4 frames starting at frame 2 is frames 2..5
    window = read_clip(VideoRef("known", str(path), start_frame=2), num_frames=4)
    assert np.abs(window.astype(int) - decoded[2:].astype(int)).max() == 0


# --- prompt sets -----------------------------------------------------------------------------------


def test_ucf101_class_list_items_and_seeds(tmp_path):
    path = tmp_path / "classInd.txt"
    path.write_text("1 ApplyEyeMakeup\n2 YoYo\n\n3 TVShow\n")
    items = build_items("ucf101", path, samples_per_prompt=3, seed=10)
    assert [it.prompt for it in items[::3]] == ["apply eye makeup", "yo yo", "tv show"]
    assert [it.video_id for it in items[:4]] == ["ucf000-000", "ucf000-001", "ucf000-002", "ucf001-000"]
    assert [it.seed for it in items] == list(range(10, 19)) and items[3].source == "YoYo"
    assert len(build_items("ucf101", path)) == 300  # 100 samples per class by default
    assert build_items("ucf101", path, 1, class_prompt="raw")[0].prompt == "ApplyEyeMakeup"
    assert class_words("Apply eye makeup") == "Apply eye makeup"
    path.write_text("1 YoYo\n2 YoYo\n")
    with pytest.raises(InputError, match="twice"):
        build_items("ucf101", path)


def test_msrvtt_one_random_caption_per_test_video(tmp_path):
    data = {"videos": [{"video_id": f"video{i}", "split": "test" if i >= 3 else "train"} for i in range(8)],
            "sentences": [{"video_id": f"video{i}", "caption": f"caption {j} of video {i}", "sen_id": 10 * i + j}
                          for i in range(8) for j in range(20)]}
    path = tmp_path / "test_videodatainfo.json"
    path.write_text(json.dumps(data))
    items = build_items("msrvtt", path, seed=0)
    assert [it.video_id for it in items] == [f"video{i}" for i in range(3, 8)]  # the test split only, one each
    assert all(it.prompt.endswith(f"of video {it.video_id[5:]}") for it in items)
    assert len({it.prompt.split()[1] for it in items}) > 1  # drawn, not always the first caption
    assert [it.prompt for it in build_items("msrvtt", path, seed=0)] == [it.prompt for it in items]
    assert [it.prompt for it in build_items("msrvtt", path, seed=1)] != [it.prompt for it in items]
    # the CSV form gives the same draw for the same captions
    csv = tmp_path / "captions.csv"
    csv.write_text("video_id,caption\n" + "".join(f'video{i},"caption {j} of video {i}"\n' for i in range(3, 8) for j in range(20)))
    assert [it.prompt for it in build_items("msrvtt", csv, seed=0)] == [it.prompt for it in items]
    csv.write_text("id,text\nvideo1,a cat\n")
    with pytest.raises(InputError, match="video_id"):
        build_items("msrvtt", csv)
