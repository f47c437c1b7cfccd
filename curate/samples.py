"""Reproducible raw sample videos with known cuts, made from ffmpeg's synthetic sources.

Every video is several shots joined by hard cuts at known frames, and some by a dissolve or a
fade through black. The set mixes sizes (1920x1080, 1280x720, 640x360, a portrait one), frame
rates (24, 25, 30, 30000/1001), one file carries an audio track and one has a shot shorter than
16 frames. The ground truth is written beside the videos as ``cuts.json``:

    {"<relative path>": {"fps": "24/1", "width": .., "height": .., "num_frames": ..,
                         "cuts": [frame, ...],              # first frame of each new hard-cut shot
                         "gradual": [[first, last], ...],   # frames inside dissolves and fades
                         "shots": [[start, end), ...]}}

Folders are Vimeo categories, as in a raw directory organised by category.

``make_bad_inputs`` writes the corpus of broken and awkward files the toolkit must survive.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from lavie.curate.video import ffmpeg_exe


@dataclass
class Shot:
    source: str  # an ffmpeg lavfi source graph with {size} and {rate} placeholders
    frames: int
    into: str = "cut"  # how this shot is entered: "cut" | "dissolve" | "fade"
    transition_frames: int = 0


@dataclass
class SampleVideo:
    name: str
    width: int
    height: int
    rate: str
    shots: list[Shot]
    audio: bool = False
    extra: dict = field(default_factory=dict)


SOURCES = {
    "testsrc2": "testsrc2=size={size}:rate={rate}",
    "mandelbrot": "mandelbrot=size={size}:rate={rate}",
    "life": "life=size={size}:rate={rate}:mold=10:ratio=0.2:seed=5:death_color=#202080:life_color=#e0c040",
    "cellauto": "cellauto=size={size}:rate={rate}:rule=110:random_fill_ratio=0.5:seed=7",
    # Every random choice pinned (points, colours, seeds): the same bytes on every run.
    "gradients": "gradients=size={size}:rate={rate}:speed=0.02:seed=3:x0=0:y0=0:x1=160:y1=90:"
                 "nb_colors=3:c0=#3050d0:c1=#e0a020:c2=#20c080",
    "smptehdbars": "smptehdbars=size={size}:rate={rate}",
    "noise_red": "color=c=#b03020:size={size}:rate={rate},noise=alls=25:allf=t+u:all_seed=7",
    "noise_green": "color=c=#20a040:size={size}:rate={rate},noise=alls=25:allf=t+u:all_seed=11",
    # Burned-in text: a subtitle line over a moving source, a broadcaster's corner logo.
    "subtitled": "mandelbrot=size={size}:rate={rate},drawtext=fontfile='{font}':text='and then the lights went out':"
                 "fontsize=h/16:fontcolor=white:box=1:boxcolor=black@0.6:boxborderw=8:x=(w-tw)/2:y=h-th-h/12",
    "logo": "life=size={size}:rate={rate}:mold=10:ratio=0.2:seed=9:death_color=#302010:life_color=#40c0e0,"
            "drawtext=fontfile='{font}':text='TV 24':fontsize=h/14:fontcolor=white@0.9:box=1:"
            "boxcolor=red@0.7:boxborderw=6:x=w-tw-w/30:y=h/20",
    # A still: one frame of the fractal held (a photo in a slideshow).
    "still": "mandelbrot=size={size}:rate={rate},loop=loop=-1:size=1:start=0,setpts=N/FRAME_RATE/TB",
}

# What each source holds that the text and motion stages measure: burned-in text, and no motion
# at all. The test pattern's frame counter is text too small to call either way (None).
TEXT_SOURCES = {"subtitled", "logo"}
SMALL_TEXT_SOURCES = {"testsrc2"}
STATIC_SOURCES = {"smptehdbars", "still"}


# What each synthetic source shows, in the words an annotator would use. They caption the
# WebVid-style and LAION-style corpora written beside the videos (descriptions of known content).
DESCRIPTIONS = {
    "testsrc2": "a test pattern of colour bars with a moving gradient and a frame counter",
    "mandelbrot": "a slow zoom into a colourful Mandelbrot fractal",
    "life": "yellow cells of Conway's game of life growing and dying on a blue background",
    "cellauto": "a black and white cellular automaton pattern scrolling upwards",
    "gradients": "smooth colour gradients slowly turning across the screen",
    "smptehdbars": "SMPTE high definition colour bars test signal",
    "noise_red": "a red screen covered in flickering grain",
    "noise_green": "a green screen covered in flickering grain",
    "subtitled": "a colourful Mandelbrot fractal zoom with a subtitle at the bottom",
    "logo": "blue cells of the game of life on a dark background with a red channel logo in the corner",
    "still": "a still image of a colourful Mandelbrot fractal",
}


def font_file() -> str:
    """A TrueType font for drawtext: the DejaVu Sans that matplotlib's wheel ships."""
    import matplotlib

    return str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf")


def sample_specs() -> list[SampleVideo]:
    """The sample set. Frame counts are small so that the whole set curates in seconds."""
    return [
        SampleVideo(
            "Animation/mandel_1080p_24.mp4", 1920, 1080, "24",
            [Shot("testsrc2", 40), Shot("mandelbrot", 36), Shot("smptehdbars", 30),
             Shot("gradients", 40, "dissolve", 8)],
        ),
        SampleVideo(
            "Travel/life_720p_25.mp4", 1280, 720, "25",
            [Shot("life", 40), Shot("gradients", 40), Shot("testsrc2", 40, "dissolve", 6),
             Shot("noise_red", 30)],
            audio=True,
        ),
        SampleVideo(
            "Sports/bars_360p_30.mp4", 640, 360, "30",
            [Shot("cellauto", 45), Shot("testsrc2", 45), Shot("mandelbrot", 10),
             Shot("smptehdbars", 45)],
        ),
        SampleVideo(
            "Documentary/portrait_ntsc.mp4", 720, 1280, "30000/1001",
            [Shot("gradients", 40), Shot("noise_green", 40), Shot("testsrc2", 40, "fade", 6),
             Shot("mandelbrot", 36)],
        ),
        # Burned-in subtitle, a corner logo, a still, and a clean moving shot: the text and
        # motion stages' ground truth (`shot_info` in cuts.json).
        SampleVideo(
            "Narrative/overlays_720p_25.mp4", 1280, 720, "25",
            [Shot("subtitled", 40), Shot("logo", 40), Shot("still", 40), Shot("cellauto", 40)],
        ),
    ]


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")


def _build_command(video: SampleVideo, out: Path) -> tuple[list[str], dict]:
    rate = Fraction(video.rate)
    size = f"{video.width}x{video.height}"
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y"]
    graph = []
    for i, shot in enumerate(video.shots):
        cmd += ["-f", "lavfi", "-i", SOURCES[shot.source].format(size=size, rate=video.rate, font=font_file())]
        graph.append(
            f"[{i}:v]trim=end_frame={shot.frames},setpts=PTS-STARTPTS,format=yuv420p,setsar=1,settb=AVTB[s{i}]"
        )
    # Join shots left to right; track where each shot starts in the output.
    cuts, gradual, shots = [], [], []
    length = video.shots[0].frames
    shots.append([0, length])
    current = "s0"
    for i, shot in enumerate(video.shots[1:], start=1):
        label = f"j{i}"
        if shot.into == "cut":
            graph.append(f"[{current}][s{i}]concat=n=2:v=1:a=0,settb=AVTB[{label}]")
            cuts.append(length)
            shots.append([length, length + shot.frames])
            length += shot.frames
        elif shot.into == "dissolve":
            k = shot.transition_frames
            offset = float(Fraction(length - k) / rate)
            duration = float(Fraction(k) / rate)
            graph.append(
                f"[{current}][s{i}]xfade=transition=dissolve:duration={duration:.6f}:offset={offset:.6f},settb=AVTB[{label}]"
            )
            gradual.append([length - k, length - 1])
            shots.append([length - k, length - k + shot.frames])
            length += shot.frames - k
        elif shot.into == "fade":
            k = shot.transition_frames
            dur = float(Fraction(k) / rate)
            # The previous shot fades out over its last k frames, this one fades in over k.
            graph.append(f"[{current}]fade=t=out:st={float(Fraction(length - k) / rate):.6f}:d={dur:.6f}[fo{i}]")
            graph.append(f"[s{i}]fade=t=in:st=0:d={dur:.6f}[fi{i}]")
            graph.append(f"[fo{i}][fi{i}]concat=n=2:v=1:a=0,settb=AVTB[{label}]")
            gradual.append([length - k, length + k - 1])
            shots.append([length, length + shot.frames])
            length += shot.frames
        else:
            raise ValueError(f"unknown transition {shot.into!r}; choose cut, dissolve or fade")
        current = label
    graph.append(f"[{current}]null[v]")
    if video.audio:
        seconds = float(Fraction(length) / rate)
        cmd += ["-f", "lavfi", "-t", f"{seconds:.3f}", "-i", "sine=frequency=440:sample_rate=44100"]
    cmd += ["-filter_complex", ";".join(graph), "-map", "[v]"]
    if video.audio:
        cmd += ["-map", f"{len(video.shots)}:a", "-c:a", "aac", "-b:a", "64k"]
    cmd += [
        "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p",
        "-r", video.rate, "-frames:v", str(length), "-movflags", "+faststart", str(out),
    ]
    truth = {
        "fps": f"{rate.numerator}/{rate.denominator}", "width": video.width, "height": video.height,
        "num_frames": length, "cuts": cuts, "gradual": gradual, "shots": shots,
        "audio": video.audio,
        "shot_info": [{"source": shot.source,
                       "text": None if shot.source in SMALL_TEXT_SOURCES else shot.source in TEXT_SOURCES,
                       "static": shot.source in STATIC_SOURCES, "caption": DESCRIPTIONS[shot.source]}
                      for shot in video.shots],
    }
    return cmd, truth


def make_samples(out_dir: str | os.PathLike, bad: bool = False) -> dict:
    """Write the sample videos (and with `bad`, the bad-input corpus) and `cuts.json`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    truth = {}
    for video in sample_specs():
        path = out_dir / video.name
        path.parent.mkdir(parents=True, exist_ok=True)
        cmd, truth[video.name] = _build_command(video, path)
        if not path.exists() or path.stat().st_size == 0:
            tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
            _run(cmd[:-1] + [str(tmp)])
            os.replace(tmp, path)
        write_sidecar(path, truth[video.name])
    with open(out_dir / "cuts.json", "w") as fh:
        json.dump(truth, fh, indent=2, sort_keys=True)
    write_corpora(out_dir)
    if bad:
        make_bad_inputs(out_dir / "bad")
    return truth


def write_sidecar(video_path: Path, truth: dict) -> Path:
    """`<video>.csv` beside the video: `start_s,end_s,caption` per shot, describing what it shows
    (the metadata a real source carries; `lavie-curate caption` reads it)."""
    import csv

    rate = Fraction(truth["fps"])
    path = video_path.with_suffix(".csv")
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["start_s", "end_s", "caption"])
        for (a, b), info in zip(truth["shots"], truth["shot_info"]):
            writer.writerow([f"{float(a / rate):.4f}", f"{float(b / rate):.4f}", info["caption"]])
    return path


def write_corpora(out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """A WebVid-style CSV over the sample videos and a LAION-style image Parquet, both captioned.

    `webvid.csv` (`videoid,name,page_dir,duration`: the video is `<page_dir>/<videoid>.mp4`) and
    `laion.parquet` (`path,caption,width,height` of one still per synthetic source under
    `images/`): what `lavie-curate import webvid|laion` reads, so that the trainer's curriculum
    can mix them as LaVie mixes WebVid10M and LAION-5B (App. C).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    out_dir = Path(out_dir)
    lines = ["videoid,name,page_dir,duration"]
    for video in sample_specs():
        folder, name = video.name.rsplit("/", 1)
        caption = ", then ".join(dict.fromkeys(DESCRIPTIONS[shot.source] for shot in video.shots))
        seconds = int(sum(shot.frames for shot in video.shots) / float(Fraction(video.rate)))
        lines.append(f'{Path(name).stem},"{caption}",{folder},PT00H00M{seconds:02d}S')
    webvid = out_dir / "webvid.csv"
    webvid.write_text("\n".join(lines) + "\n")

    images = out_dir / "images"
    images.mkdir(exist_ok=True)
    rows = {"path": [], "caption": [], "width": [], "height": []}
    for source, caption in DESCRIPTIONS.items():
        png = images / f"{source}.png"
        if not png.exists():
            graph = SOURCES[source].format(size="320x192", rate="25", font=font_file())
            _run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", graph,
                  "-vf", "select=eq(n\\,12)", "-frames:v", "1", str(png)])
        rows["path"].append(f"images/{png.name}")
        rows["caption"].append(caption)
        rows["width"].append(320)
        rows["height"].append(192)
    laion = out_dir / "laion.parquet"
    pq.write_table(pa.table(rows), laion)
    return webvid, laion


def make_bad_inputs(out_dir: str | os.PathLike) -> dict[str, str]:
    """The files a curation run must survive, with what each should become.

    Returns `{relative name: expectation}` where the expectation is "error" (a `videos` row with
    status error) or "ok" (awkward but valid: its clips must come out right).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ff = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y"]
    expect = {}

    (out_dir / "zero_bytes.mp4").write_bytes(b"")
    expect["zero_bytes.mp4"] = "error"
    (out_dir / "not_a_video.mp4").write_text("this is a text file with a video extension\n" * 20)
    expect["not_a_video.mp4"] = "error"

    good = out_dir / ".source.mp4"
    _run(ff + ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-frames:v", "50",
               "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", str(good)])
    data = good.read_bytes()
    # Cut in the middle of the media data: the index (at the end, no faststart) is lost.
    (out_dir / "truncated.mp4").write_bytes(data[: len(data) // 2])
    expect["truncated.mp4"] = "error"

    _run(ff + ["-f", "lavfi", "-i", "sine=frequency=330:duration=2", "-c:a", "aac",
               str(out_dir / "audio_only.mp4")])
    expect["audio_only.mp4"] = "error"

    # Rotated: stored 320x192, displayed 192x320 (a phone video held upright).
    stored = out_dir / ".rotated_src.mp4"
    _run(ff + ["-f", "lavfi", "-i", "testsrc2=size=320x192:rate=25", "-frames:v", "40",
               "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", str(stored)])
    _run(ff + ["-display_rotation", "90", "-i", str(stored), "-c", "copy",
               str(out_dir / "rotated.mp4")])
    stored.unlink()
    expect["rotated.mp4"] = "ok"

    # Variable frame rate: 30 fps with 3 of every 10 frames dropped, timestamps kept.
    _run(ff + ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-frames:v", "90",
               "-vf", "select='lt(mod(n\\,10)\\,7)'", "-fps_mode", "vfr",
               "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
               str(out_dir / "vfr.mp4")])
    expect["vfr.mp4"] = "ok"

    odd = out_dir / "clip with spaces – ñandú 日本.mp4"
    odd.write_bytes(data)
    expect[odd.name] = "ok"
    good.unlink()

    # Unreadable: a dangling link reads as a missing file even for root; a mode-000 file too
    # for anyone else.
    link = out_dir / "dangling_link.mp4"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(out_dir / "does-not-exist.mp4")
    expect["dangling_link.mp4"] = "error"
    return expect
