"""The prompt sets of the paper's zero-shot protocols (LaVie §4.3), read from files the user supplies.

- UCF-101: the 101 class names as prompts, 100 samples per class (10,100 videos). The file is
  UCF-101's own `classInd.txt` ("1 ApplyEyeMakeup", one class a line) or a plain list of names.
  `class_prompt="words"` turns "ApplyEyeMakeup" into "apply eye makeup"; "raw" keeps it as written.
- MSR-VTT: one caption per test video, drawn at random with the seed (2,990 videos). The file is
  the official `test_videodatainfo.json` (its `videos` with `split: "test"` and their `sentences`)
  or a CSV with a header holding `video_id` and `caption` (or `sentence`), one row per caption.
- A plain prompt list: one prompt a line.

Every item has a stable `video_id` (its file name) and its own seed, so a sharded or resumed run
samples exactly the same videos.
"""

from __future__ import annotations

import csv
import json
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError

PROTOCOLS = ("ucf101", "msrvtt", "prompts")
DEFAULT_SAMPLES = {"ucf101": 100, "msrvtt": 1, "prompts": 1}
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class EvalItem:
    """One video to sample: its prompt, where the prompt came from, and its seed."""

    video_id: str  # file stem, unique in the set
    prompt: str
    prompt_index: int
    sample: int
    seed: int
    source: str  # the UCF-101 class, the MSR-VTT video id, or the prompt line number


def class_words(name: str) -> str:
    """"ApplyEyeMakeup" -> "apply eye makeup"; "YoYo" -> "yo yo"; names with spaces stay as they are."""
    if " " in name.strip():
        return " ".join(name.split())
    return " ".join(part.lower() for part in _CAMEL.findall(name)) or name


def _read_text(path: str | Path, what: str) -> str:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} file {str(path)!r} not found")
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{what} file {str(path)!r} could not be read as UTF-8 text ({err})") from None


def read_ucf101_classes(path: str | Path) -> list[str]:
    """Class names from `classInd.txt` ("1 ApplyEyeMakeup") or one name a line; '#' lines skipped."""
    names = []
    for number, line in enumerate(_read_text(path, "UCF-101 class list").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        index, _, rest = line.partition(" ")
        names.append(rest.strip() if index.isdigit() and rest.strip() else line)
    if not names:
        raise InputError(f"UCF-101 class list {str(path)!r} holds no class names")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"UCF-101 class list {str(path)!r} names a class twice: {duplicates[0]!r}")
    return names


def read_prompt_lines(path: str | Path) -> list[str]:
    prompts = [line.strip() for line in _read_text(path, "prompt list").splitlines() if line.strip()]
    if not prompts:
        raise InputError(f"prompt list {str(path)!r} holds no prompts")
    return prompts


def read_msrvtt_captions(path: str | Path) -> dict[str, list[str]]:
    """video id -> its captions, in file order; from the official JSON (test split) or a CSV."""
    text = _read_text(path, "MSR-VTT caption")
    captions: dict[str, list[str]] = {}
    if str(path).lower().endswith(".json"):
        try:
            data = json.loads(text)
            test = {v["video_id"] for v in data.get("videos", []) if v.get("split", "test") == "test"} if data.get("videos") else None
            for sentence in data["sentences"]:
                if test is None or sentence["video_id"] in test:
                    captions.setdefault(str(sentence["video_id"]), []).append(str(sentence["caption"]).strip())
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
            raise InputError(f"MSR-VTT caption file {str(path)!r} is not MSR-VTT's videodatainfo JSON "
                             f"(needs 'sentences' with 'video_id' and 'caption'): {type(err).__name__} {err}") from None
    else:
        reader = csv.DictReader(text.splitlines())
        fields = [f.strip() for f in reader.fieldnames or []]
        caption_field = "caption" if "caption" in fields else "sentence" if "sentence" in fields else None
        if "video_id" not in fields or caption_field is None:
            raise InputError(f"MSR-VTT caption CSV {str(path)!r} needs a header with 'video_id' and 'caption' "
                             f"(or 'sentence') columns, got {fields}")
        reader.fieldnames = fields
        for row in reader:
            video_id, caption = (row.get("video_id") or "").strip(), (row.get(caption_field) or "").strip()
            if video_id and caption:
                captions.setdefault(video_id, []).append(caption)
    if not captions:
        raise InputError(f"MSR-VTT caption file {str(path)!r} holds no test captions")
    return captions


def _safe(name: str) -> str:
    return _UNSAFE.sub("_", name).strip("._") or "video"


def build_items(protocol: str, path: str | Path, samples_per_prompt: int | None = None, seed: int = 0,
                class_prompt: str = "words", limit: int | None = None) -> list[EvalItem]:
    """The items of a protocol's prompt file, in a fixed order; seeds are `seed + position`."""
    if protocol not in PROTOCOLS:
        raise InputError(f"protocol {protocol!r}: choose one of {PROTOCOLS}")
    if class_prompt not in ("words", "raw"):
        raise InputError(f"class prompt style {class_prompt!r}: choose 'words' or 'raw'")
    samples = DEFAULT_SAMPLES[protocol] if samples_per_prompt is None else samples_per_prompt
    if samples < 1:
        raise InputError(f"samples per prompt must be >= 1, got {samples}")

    if protocol == "ucf101":
        names = read_ucf101_classes(path)
        prompts = [(f"ucf{i:03d}", class_words(n) if class_prompt == "words" else n, n) for i, n in enumerate(names)]
    elif protocol == "msrvtt":
        prompts = []
        for video_id, captions in read_msrvtt_captions(path).items():
            # one caption per video, drawn from a generator seeded by (seed, video id): the choice of
            # a video does not depend on which other videos the file holds
            rng = np.random.default_rng([seed, zlib.crc32(video_id.encode())])
            prompts.append((_safe(video_id), captions[int(rng.integers(len(captions)))], video_id))
    else:
        prompts = [(f"p{i:05d}", p, str(i + 1)) for i, p in enumerate(read_prompt_lines(path))]

    items = []
    for index, (stem, prompt, source) in enumerate(prompts):
        for sample in range(samples):
            position = len(items)
            video_id = f"{stem}-{sample:03d}" if samples > 1 else stem
            items.append(EvalItem(video_id, prompt, index, sample, seed + position, source))
    if len({it.video_id for it in items}) != len(items):
        raise InputError(f"{protocol} file {str(path)!r}: two entries map to the same file name")
    return items[:limit] if limit is not None else items
