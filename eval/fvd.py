"""FVD between a generated and a real video set, and IS of the generated set (LaVie §4.3, UCF-101).

FVD follows TATS and StyleGAN-V: the Kinetics-400 I3D as a TorchScript file (`i3d_torchscript.pt`,
the file StyleGAN-V and most video-generation repositories use), called as
`i3d(videos, rescale=False, resize=False, return_features=True)` on (B, 3, 16, 224, 224) videos in
[-1, 1] after the paper's preprocessing (`lavie.eval.preprocess`); its 400-d features give the
Gaussian statistics of each set and the Fréchet distance between them.

IS follows TGAN/TGANv2 as StyleGAN-V runs it: a C3D fine-tuned on UCF-101 as a TorchScript file
(`c3d_ucf101.pt`), called as `c3d(videos)` on the same square crops as (B, 3, 16, 224, 224) float
videos in [0, 255] (the file resizes and normalises for itself), returning class probabilities
(`--is-output logits` applies a softmax first); 10 splits.
"""

from __future__ import annotations

import json
import logging
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .errors import InputError, TooFewVideos
from .frechet import FeatureStats, frechet_distance, inception_score
from .videos import CLIP_STARTS, VideoSet, read_clip

logger = logging.getLogger(__name__)

I3D_SOURCE = ("the Kinetics-400 I3D as TorchScript, i3d_torchscript.pt, the file StyleGAN-V's and TATS-style FVD code use "
              "(https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt); download it once and pass its path with --i3d")
C3D_SOURCE = ("a UCF-101 classifier as TorchScript, e.g. StyleGAN-V's c3d_ucf101.pt (TGANv2's C3D, "
              "https://www.dropbox.com/s/jxpu7avzdc9n97q/c3d_ucf101.pt); download it once and pass its path with --is-classifier")


def check_model_file(path: str | Path | None, what: str, source: str) -> Path:
    """The path of a user-supplied TorchScript file, or an InputError naming it and where it comes from."""
    if not path:
        raise InputError(f"no {what} file given: {source}")
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} file {str(path)!r} not found: {source}")
    return path


class TorchScriptVideoNet:
    """A TorchScript video network loaded once: I3D features (FVD) or class probabilities (IS)."""

    def __init__(self, path: str | Path, device, kind: str, is_output: str = "probs"):
        import torch

        if kind not in ("i3d", "classifier"):
            raise ValueError(f"kind={kind!r}: choose 'i3d' or 'classifier'")
        if is_output not in ("probs", "logits"):
            raise ValueError(f"is_output={is_output!r}: choose 'probs' or 'logits'")
        self.path, self.kind, self.is_output = Path(path), kind, is_output
        self.device = torch.device(device)
        try:
            with warnings.catch_warnings():  # torch's deprecation notice of TorchScript: the published files are TorchScript
                warnings.simplefilter("ignore", FutureWarning)
                self.module = torch.jit.load(str(path), map_location=self.device).eval()
        except (RuntimeError, ValueError) as err:
            raise InputError(f"{str(path)!r} is not a TorchScript file ({' '.join(str(err).split())[:200]}): "
                             f"{I3D_SOURCE if kind == 'i3d' else C3D_SOURCE}") from None

    def __call__(self, videos) -> np.ndarray:
        """videos (B, 3, T, S, S) in [-1, 1] -> features (B, D) or class probabilities (B, C), float64."""
        import torch

        with torch.inference_mode():
            videos = videos.to(self.device)
            try:
                if self.kind == "i3d":
                    out = self.module(videos, rescale=False, resize=False, return_features=True)
                else:
                    out = self.module((videos + 1.0) * 127.5)
            except torch.OutOfMemoryError:
                raise
            except RuntimeError as err:  # a file of another network, or one with another calling convention
                first = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
                raise InputError(f"{str(self.path)!r} failed on a batch of shape {tuple(videos.shape)} ({first.strip()[:200]}): "
                                 f"{I3D_SOURCE if self.kind == 'i3d' else C3D_SOURCE}") from None
            if self.is_output == "logits":
                out = torch.softmax(out.float(), dim=-1)
        out = out.double().cpu().numpy().reshape(len(videos), -1)
        if self.kind == "classifier" and self.is_output == "probs":
            sums = out.sum(axis=1)
            if (out < -1e-6).any() or not np.allclose(sums, 1.0, atol=1e-3):
                raise InputError(f"classifier {str(self.path)!r} does not return probabilities (row sums {sums.min():.3g}.."
                                 f"{sums.max():.3g}); pass --is-output logits if it returns logits")
        return out


@dataclass
class ClipOptions:
    """Which frames of each video are scored, and how videos are drawn: the reproducibility knobs."""

    num_frames: int = 16
    stride: int = 1
    clip_start: str = "random"  # random | first | center
    max_videos: int | None = None
    seed: int = 0
    batch_size: int = 8
    workers: int = 4

    def __post_init__(self):
        if self.clip_start not in CLIP_STARTS:
            raise InputError(f"clip start {self.clip_start!r}: choose one of {CLIP_STARTS}")
        if self.num_frames < 1 or self.stride < 1 or self.batch_size < 1:
            raise InputError("--num-frames, --stride and --batch-size must be >= 1")
        if self.max_videos is not None and self.max_videos < 2:
            raise InputError(f"--max-videos must be >= 2 (a covariance needs two videos), got {self.max_videos}")


def extract(video_set: VideoSet, nets: list[TorchScriptVideoNet], options: ClipOptions,
            progress: bool = False) -> tuple[list[np.ndarray], list[str], list[dict]]:
    """Run every network on every readable video: one (N, D) array per network, the N keys used,
    and an error entry (key, reason) for each video that could not be read."""
    import torch
    from tqdm.auto import tqdm

    from .preprocess import preprocess_video

    def load(video):
        try:
            return preprocess_video(read_clip(video, options.num_frames, options.stride, options.clip_start, options.seed))
        except ValueError as err:
            return f"{video.path}: {err}"

    outputs: list[list[np.ndarray]] = [[] for _ in nets]
    keys, errors = [], []
    videos = video_set.videos
    bar = tqdm(total=len(videos), desc=f"features {Path(video_set.spec).name}", disable=not progress)
    # decoding runs in threads (PyAV releases the GIL), a few batches at a time to bound memory
    with ThreadPoolExecutor(max_workers=max(1, options.workers)) as pool:
        chunk = options.batch_size * 4
        for first in range(0, len(videos), chunk):
            part = videos[first : first + chunk]
            batch, batch_keys = [], []
            for video, clip in zip(part, pool.map(load, part)):
                if isinstance(clip, str):
                    errors.append({"key": video.key, "error": clip})
                    continue
                batch.append(clip)
                batch_keys.append(video.key)
            for start in range(0, len(batch), options.batch_size):
                stacked = torch.stack(batch[start : start + options.batch_size])  # (B, 3, T, 224, 224)
                for out, net in zip(outputs, nets):
                    out.append(net(stacked))
            keys += batch_keys
            bar.update(len(part))
    bar.close()
    return [np.concatenate(o) if o else np.zeros((0, 0)) for o in outputs], keys, errors


def _stats(features: np.ndarray, video_set: VideoSet, errors: list[dict]) -> FeatureStats:
    if len(features) < 2:
        raise TooFewVideos(f"{video_set.spec}: {len(features)} readable videos, FVD needs at least 2"
                           + (f" (first error: {errors[0]['error']})" if errors else ""))
    return FeatureStats.from_features(features)


def load_cached_stats(path: Path, key: dict) -> FeatureStats | None:
    """Real-set statistics saved by an earlier run with the same settings, else None."""
    if not path.is_file():
        return None
    try:
        with np.load(path) as data:
            recorded = json.loads(str(data["key"])) if "key" in data else None
    except (OSError, ValueError, EOFError) as err:
        raise InputError(f"real statistics {str(path)!r} are not a statistics file saved by lavie-eval fvd ({err})") from None
    if recorded != key:
        changed = next((k for k in sorted(set(key) | set(recorded or {})) if (recorded or {}).get(k) != key.get(k)), "key")
        raise InputError(f"real statistics {str(path)!r} were computed with other settings ({changed}: "
                         f"{(recorded or {}).get(changed)!r}, now {key.get(changed)!r}); delete the file or pass another one")
    return FeatureStats.load(path)


def save_cached_stats(path: Path, stats: FeatureStats, key: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez(tmp, mu=stats.mu, sigma=stats.sigma, count=stats.count, key=json.dumps(key, sort_keys=True))
    tmp.replace(path)


def set_summary(video_set: VideoSet, used: int, errors: list[dict]) -> dict:
    return {"spec": str(Path(video_set.spec).resolve()), "kind": video_set.kind, "videos": used, "read_errors": len(errors),
            "unusable_rows": len(video_set.unusable), "errors": errors[:20]}


def compute_fvd(generated: VideoSet, real: VideoSet | None, i3d: TorchScriptVideoNet, options: ClipOptions,
                classifier: TorchScriptVideoNet | None = None, is_splits: int = 10, real_stats: Path | None = None,
                real_key: dict | None = None, progress: bool = False) -> dict:
    """FVD of `generated` against `real` (or against cached real statistics), IS when a classifier is given."""
    generated = generated.subset(options.max_videos, options.seed)
    results: dict = {"clip": asdict(options)}

    nets = [i3d] + ([classifier] if classifier is not None else [])
    outs, keys, errors = extract(generated, nets, options, progress)
    gen_stats = _stats(outs[0], generated, errors)
    results["generated"] = set_summary(generated, len(keys), errors)

    cached = load_cached_stats(real_stats, real_key or {}) if real_stats else None
    if cached is not None:
        real_stats_ = cached
        results["real"] = {"stats_file": str(real_stats), "videos": cached.count, "from_cache": True, **(real_key or {})}
    else:
        if real is None:
            raise InputError(f"no real video set, and no statistics at {real_stats}; pass --real")
        real = real.subset(options.max_videos, options.seed)
        (real_features,), real_keys, real_errors = extract(real, [i3d], options, progress)
        real_stats_ = _stats(real_features, real, real_errors)
        results["real"] = {**set_summary(real, len(real_keys), real_errors), "from_cache": False}
        if real_stats:
            save_cached_stats(real_stats, real_stats_, real_key or {})
            results["real"]["stats_file"] = str(real_stats)
    if real_stats_.mu.shape != gen_stats.mu.shape:
        raise InputError(f"feature sizes differ: generated {gen_stats.mu.shape[0]}, real {real_stats_.mu.shape[0]}")
    results["fvd"] = frechet_distance(gen_stats.mu, gen_stats.sigma, real_stats_.mu, real_stats_.sigma)
    results["feature_dim"] = int(gen_stats.mu.shape[0])

    if classifier is not None:
        probs = outs[1]
        if len(probs) < is_splits:
            raise TooFewVideos(f"{generated.spec}: {len(probs)} readable videos, IS over {is_splits} splits needs at least {is_splits}")
        mean, std = inception_score(probs, is_splits)
        results["is"] = {"mean": mean, "std": std, "splits": is_splits, "classes": int(probs.shape[1])}
    return results
