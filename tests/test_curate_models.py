"""The model-backed curation stages (aesthetic, category, caption) on tiny models of the real
architectures, built from configs, saved to a temp dir and loaded through the same code as the
published weights: open_clip with a tiny ViT config, the LAION head as .pth and as safetensors,
tiny Qwen2.5-VL and SmolVLM2 checkpoints with their processors and chat templates.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import av
import numpy as np
import pyarrow as pa
import pytest
import torch

from lavie.curate.manifest import STATUS_ERROR, STATUS_OK, conform
from lavie.curate.registry import get_stage

# -- tiny models ---------------------------------------------------------------------------------

# A ViT of the CLIP family, small enough for a CPU test: patch 8 on 32 px images, two layers.
TINY_CLIP_CFG = {
    "embed_dim": 32,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
TINY_CLIP_NAME = "lavie-tiny-ViT"


def make_tiny_clip(root: Path) -> dict:
    """A tiny open_clip model saved two ways; returns the stage kwargs for each.

    `named`: a config registered at run time with `add_model_config` plus a checkpoint file (the
    path real ViT-L-14 weights take). `local_dir`: a `local-dir:` folder with open_clip_config.json,
    which every process (a Ray worker too) can load without registration.
    """
    import open_clip
    from safetensors.torch import save_file

    root.mkdir(parents=True, exist_ok=True)
    (root / f"{TINY_CLIP_NAME}.json").write_text(json.dumps(TINY_CLIP_CFG))
    open_clip.add_model_config(root / f"{TINY_CLIP_NAME}.json")
    torch.manual_seed(0)
    model = open_clip.create_model(TINY_CLIP_NAME)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    torch.save(state, root / "tiny_clip.pth")
    local = root / "tiny_clip_dir"
    local.mkdir(exist_ok=True)
    (local / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP_CFG, "preprocess_cfg": {}}))
    save_file(state, str(local / "open_clip_model.safetensors"))
    return {
        "named": {"clip_model": TINY_CLIP_NAME, "clip_pretrained": str(root / "tiny_clip.pth")},
        "local_dir": {"clip_model": f"local-dir:{local}", "clip_pretrained": None},
    }


def make_tiny_head(root: Path, in_dim: int = 32) -> dict:
    """The LAION head architecture over `in_dim` embeddings, as .pth and as .safetensors."""
    from safetensors.torch import save_file

    from lavie.curate.aesthetic import AestheticHead

    torch.manual_seed(1)
    head = AestheticHead(in_dim)
    with torch.no_grad():
        head.layers[-1].bias.fill_(5.0)  # scores near the real predictor's range
    state = {k: v.contiguous() for k, v in head.state_dict().items()}
    torch.save(state, root / "tiny-linearMSE.pth")
    save_file(state, str(root / "tiny-linearMSE.safetensors"))
    return {"pth": str(root / "tiny-linearMSE.pth"), "safetensors": str(root / "tiny-linearMSE.safetensors")}


def _byte_bpe(special: list[str]):
    """A byte-level BPE tokenizer trained offline on a few sentences, with the model's specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=special, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = ["a red square moves left across a blue field", "describe this video in one sentence",
              "a person walks on the beach at sunset", "colour bars and a test pattern",
              "User Assistant user assistant the main subject, the action and the scene"]
    tok.train_from_iterator(corpus * 10, trainer)
    return tok


QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|image_pad|>", "<|video_pad|>"]
# The layout of Qwen2.5-VL's published template, reduced to what the stage sends.
QWEN_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def make_tiny_qwen(path: Path, hidden: int = 32, layers: int = 2) -> str:
    from transformers import (PreTrainedTokenizerFast, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration,
                              Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor)

    tok = PreTrainedTokenizerFast(tokenizer_object=_byte_bpe(QWEN_SPECIAL), eos_token="<|im_end|>",
                                  pad_token="<|endoftext|>")
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIAL}
    special = {"bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"],
               "pad_token_id": ids["<|endoftext|>"]}
    head_dim = hidden // 4
    config = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=2048, **special,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                          "mrope_section": [head_dim // 8, head_dim // 8, head_dim // 4]}),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=hidden,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                           fullatt_block_indexes=[1]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"], **special,
    )
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = special["eos_token_id"]
    model.generation_config.pad_token_id = special["pad_token_id"]
    model.save_pretrained(path)
    pixels = 56 * 56  # one 2x2 merge of 28 px per frame pair: a handful of visual tokens
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=pixels, max_pixels=pixels),
        video_processor=Qwen2VLVideoProcessor(min_pixels=pixels, max_pixels=pixels),
        tokenizer=tok, chat_template=QWEN_TEMPLATE,
    )
    processor.save_pretrained(path)
    return str(path)


SMOL_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<image>", "<fake_token_around_image>",
                "<global-img>", "<video>"] + [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
# SmolVLM2's published template layout ("User:<image>...<end_of_utterance>\nAssistant:").
SMOL_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% elif line['type'] == 'video' %}{{ '<video>' }}"
    "{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def make_tiny_smolvlm(path: Path) -> str:
    from transformers import (PreTrainedTokenizerFast, SmolVLMConfig, SmolVLMForConditionalGeneration,
                              SmolVLMImageProcessor, SmolVLMProcessor, SmolVLMVideoProcessor)

    tok = PreTrainedTokenizerFast(
        tokenizer_object=_byte_bpe(SMOL_SPECIAL), bos_token="<|im_start|>", eos_token="<end_of_utterance>",
        pad_token="<|endoftext|>",
        extra_special_tokens={"image_token": "<image>", "fake_image_token": "<fake_token_around_image>",
                              "global_image_token": "<global-img>", "end_of_utterance_token": "<end_of_utterance>",
                              "video_token": "<video>"},
    )
    ids = {t: tok.convert_tokens_to_ids(t) for t in SMOL_SPECIAL[:7]}
    image_size, patch = 32, 8
    config = SmolVLMConfig(
        text_config=dict(model_type="llama", vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=2048, bos_token_id=ids["<|im_start|>"],
                         eos_token_id=ids["<end_of_utterance>"], pad_token_id=ids["<|endoftext|>"]),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=image_size, patch_size=patch),
        scale_factor=2, image_token_id=ids["<image>"],
    )
    torch.manual_seed(0)
    model = SmolVLMForConditionalGeneration(config)
    model.generation_config.eos_token_id = ids["<end_of_utterance>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(path)
    size = {"longest_edge": image_size}
    processor = SmolVLMProcessor(
        image_processor=SmolVLMImageProcessor(size=size, max_image_size=size, do_image_splitting=False),
        video_processor=SmolVLMVideoProcessor(size=size, max_image_size=size),
        tokenizer=tok, chat_template=SMOL_TEMPLATE,
        image_seq_len=(image_size // patch) ** 2 // config.scale_factor**2,
    )
    processor.save_pretrained(path)
    return str(path)


# -- tiny clips ----------------------------------------------------------------------------------


def write_clip(path: Path, seed: int, frames: int = 16, size: tuple[int, int] = (64, 48)) -> None:
    """A short h264 clip of a coloured square moving over noise: every clip looks different."""
    rng = np.random.default_rng(seed)
    background = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    colour = rng.integers(0, 255, 3, dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for t in range(frames):
            img = background.copy()
            x = (t * 3) % (size[0] - 16)
            img[16:32, x:x + 16] = colour
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("tiny-models")
    clip = make_tiny_clip(root / "clip")
    return {
        "clip": clip,
        "head": make_tiny_head(root),
        "qwen": make_tiny_qwen(root / "qwen"),
        "smolvlm": make_tiny_smolvlm(root / "smolvlm"),
    }


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> pa.Table:
    """Seven clips: four good ones, one rejected, one failed earlier, one that cannot be decoded.

    The rejected and failed rows point at files that do not exist: decoding them would turn them
    into errors, so their untouched status shows they were not decoded.
    """
    root = tmp_path_factory.mktemp("clips")
    for i in range(4):
        write_clip(root / f"c{i}.mp4", seed=i)
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video" * 4)
    good = [dict(clip_id=f"c{i}", source_path=str(root / f"c{i}.mp4"), clip_path=str(root / f"c{i}.mp4"),
                 status=STATUS_OK, error=None, keep=True, category=None) for i in range(4)]
    rejected = dict(clip_id="rejected", source_path=str(root / "missing-a.mp4"), clip_path=None,
                    status=STATUS_OK, error=None, keep=False, category=None)
    failed = dict(clip_id="failed", source_path=str(root / "missing-b.mp4"), clip_path=None,
                  status=STATUS_ERROR, error="probe failed: earlier", keep=None, category=None)
    broken = dict(clip_id="broken", source_path=str(root / "broken.mp4"), clip_path=str(root / "broken.mp4"),
                  status=STATUS_OK, error=None, keep=True, category=None)
    table = [good[0], rejected, good[1], broken, failed, good[2], good[3]]
    for row in table:
        row.update(start_frame=0, num_frames=16, fps=24.0, width=64, height=48)
    schema = pa.schema([("clip_id", pa.string()), ("source_path", pa.string()), ("clip_path", pa.string()),
                        ("status", pa.string()), ("error", pa.string()), ("keep", pa.bool_()),
                        ("category", pa.string()), ("start_frame", pa.int64()), ("num_frames", pa.int64()),
                        ("fps", pa.float64()), ("width", pa.int32()), ("height", pa.int32())])
    return pa.Table.from_pylist(table, schema=schema)


def run_stage(name: str, table: pa.Table, batch_size: int = 3, **kwargs) -> pa.Table:
    """A stage over `table` through the runner's own block conversion, batch by batch.

    Blocks are conformed to the manifest schema as the writer does: a column that is all null
    in one block (no clip failed there) gets its declared type.
    """
    stage = build_stage(name, **kwargs)
    stage.setup()
    blocks = [stage(table.slice(i, batch_size)) for i in range(0, table.num_rows, batch_size)]
    return pa.concat_tables([conform(block, "clips") for block in blocks])


def build_stage(name: str, **kwargs):
    """The stage that does what `name` names: aesthetic and category are the `clip` stage's two
    outputs (one CLIP pass), each alone here."""
    if name == "aesthetic":
        name, kwargs = "clip", {**kwargs, "category": False}
    elif name == "category":
        kwargs = {("overwrite_category" if k == "overwrite" else k): v for k, v in kwargs.items()}
        name, kwargs = "clip", {**kwargs, "aesthetic": False}
    cls = get_stage(name)
    return cls(cls.Config(**kwargs))


def by_id(table: pa.Table, column: str) -> dict:
    return dict(zip(table.column("clip_id").to_pylist(), table.column(column).to_pylist()))


def assert_untouched_rows(out: pa.Table, table: pa.Table, column: str) -> None:
    """Rows kept in order; rejected/failed rows not decoded and null; the broken clip an error row."""
    assert out.column("clip_id").to_pylist() == table.column("clip_id").to_pylist()
    status, error, values = by_id(out, "status"), by_id(out, "error"), by_id(out, column)
    assert status["rejected"] == STATUS_OK and error["rejected"] is None and values["rejected"] is None
    assert status["failed"] == STATUS_ERROR and error["failed"] == "probe failed: earlier"
    assert values["failed"] is None
    assert status["broken"] == STATUS_ERROR and "cannot decode clip" in error["broken"]
    assert values["broken"] is None
    for i in range(4):
        assert status[f"c{i}"] == STATUS_OK and error[f"c{i}"] is None and values[f"c{i}"] is not None


# -- aesthetic -----------------------------------------------------------------------------------


def test_aesthetic_scores_align_with_rows_and_match_the_published_recipe(models, rows):
    import open_clip
    from PIL import Image

    from lavie.curate.aesthetic import AestheticHead
    from lavie.curate.video import clip_frames

    out = run_stage("aesthetic", rows, head=models["head"]["pth"], **models["clip"]["named"])
    assert_untouched_rows(out, rows, "aesthetic")
    assert out.schema.field("aesthetic").type == pa.float64()

    # The same score by hand: normalised CLIP embeddings of first/middle/last, head, mean.
    clip, _, preprocess = open_clip.create_model_and_transforms(
        TINY_CLIP_NAME, pretrained=models["clip"]["named"]["clip_pretrained"], force_quick_gelu=True)
    head = AestheticHead(32)
    head.load_state_dict(torch.load(models["head"]["pth"], weights_only=True))
    clip.eval(), head.eval()
    scores = by_id(out, "aesthetic")
    with torch.no_grad():
        for row in rows.to_pylist():
            if not row["clip_id"].startswith("c"):
                continue
            # Decoded straight to the model's input scale (short side 32), as the stage does.
            frames = clip_frames(row["source_path"], row["clip_path"], 0, 16, 3, size=(42, 32))  # (3, H, W, 3)
            assert frames.shape == (3, 32, 42, 3)
            pixels = torch.stack([preprocess(Image.fromarray(f)) for f in frames])
            emb = torch.nn.functional.normalize(clip.encode_image(pixels), dim=-1)
            expected = head(emb).mean().item()
            assert scores[row["clip_id"]] == pytest.approx(expected, abs=1e-4)
    assert len({round(scores[f"c{i}"], 6) for i in range(4)}) == 4  # distinct clips, distinct scores


def test_aesthetic_pth_and_safetensors_heads_give_the_same_scores(models, rows):
    pth = run_stage("aesthetic", rows, head=models["head"]["pth"], **models["clip"]["local_dir"])
    safe = run_stage("aesthetic", rows, batch_size=7, head=models["head"]["safetensors"],
                     **models["clip"]["local_dir"])
    assert pth.column("aesthetic").to_pylist() == safe.column("aesthetic").to_pylist()
    # local-dir and named config + checkpoint are the same weights: the same scores.
    named = run_stage("aesthetic", rows, head=models["head"]["pth"], **models["clip"]["named"])
    for a, b in zip(pth.column("aesthetic").to_pylist(), named.column("aesthetic").to_pylist()):
        assert (a is None and b is None) or a == pytest.approx(b, abs=1e-5)


def test_aesthetic_min_reduction_is_at_most_the_mean(models, rows):
    mean = by_id(run_stage("aesthetic", rows, head=models["head"]["pth"], **models["clip"]["named"]), "aesthetic")
    low = by_id(run_stage("aesthetic", rows, head=models["head"]["pth"], reduce="min",
                          **models["clip"]["named"]), "aesthetic")
    for i in range(4):
        assert low[f"c{i}"] < mean[f"c{i}"]


def test_aesthetic_bad_configuration_is_a_value_error(models):
    cls = get_stage("clip")
    with pytest.raises(ValueError, match="clip.reduce"):
        cls.Config(head=models["head"]["pth"], reduce="max", **models["clip"]["named"])
    from lavie.curate.aesthetic import AestheticHead

    wrong = Path(models["head"]["pth"]).with_name("head768.pth")
    torch.save(AestheticHead(768).state_dict(), wrong)
    with pytest.raises(ValueError, match="768-d embeddings"):
        build_stage("aesthetic", head=str(wrong), **models["clip"]["named"]).setup()


def test_one_clip_pass_gives_both_aesthetic_and_category(models, rows, monkeypatch):
    from lavie.curate.clip_backbone import ClipBackbone

    calls = []
    encode = ClipBackbone.encode_frames
    monkeypatch.setattr(ClipBackbone, "encode_frames", lambda self, f, **k: calls.append(len(f)) or encode(self, f, **k))
    both = run_stage("clip", rows, batch_size=7, head=models["head"]["pth"], **models["clip"]["named"])
    assert calls == [4 * 3]  # one embedding pass over the 4 surviving clips' 3 frames
    alone = run_stage("aesthetic", rows, batch_size=7, head=models["head"]["pth"], **models["clip"]["named"])
    cat = run_stage("category", rows, batch_size=7, **models["clip"]["named"])
    for a, b in zip(both.column("aesthetic").to_pylist(), alone.column("aesthetic").to_pylist()):
        assert (a is None and b is None) or a == pytest.approx(b, abs=1e-5)
    assert both.column("category").to_pylist() == cat.column("category").to_pylist()


def test_missing_aesthetic_models_are_clear_errors(models, tmp_path):
    from lavie.curate.aesthetic import DEFAULT_HEAD

    cls = get_stage("clip")
    assert cls.RESOURCES.holds_model and cls.RESOURCES.gpus
    check = lambda **kw: cls.check_available(cls.Config(**kw))  # noqa: E731
    assert check(head=models["head"]["pth"], **models["clip"]["local_dir"]) is None
    # The published head from the hub: not in this offline cache.
    reason = check(head=DEFAULT_HEAD, **models["clip"]["named"])
    assert DEFAULT_HEAD in reason and "--set stages.clip.head=" in reason
    with pytest.raises(FileNotFoundError) as err:
        build_stage("clip", head=DEFAULT_HEAD, **models["clip"]["named"]).setup()
    assert DEFAULT_HEAD in str(err.value) and "--set stages.clip.head=" in str(err.value)
    missing = str(tmp_path / "sac+logos+ava1-l14-linearMSE.pth")
    with pytest.raises(FileNotFoundError, match="sac\\+logos\\+ava1-l14-linearMSE.pth"):
        build_stage("clip", head=missing, **models["clip"]["named"]).setup()
    # The real backbone: ViT-L-14 with OpenAI's weights, also not cached here.
    reason = check(head=models["head"]["pth"])
    assert "ViT-L-14" in reason and "openai" in reason and "clip_pretrained" in reason
    with pytest.raises(FileNotFoundError, match="ViT-L-14"):
        build_stage("clip", head=models["head"]["pth"]).setup()
    # A named backbone without weights would score with random ones: refused.
    reason = check(head=models["head"]["pth"], clip_model=TINY_CLIP_NAME, clip_pretrained=None)
    assert "clip.clip_pretrained" in reason


# -- category ------------------------------------------------------------------------------------


def test_category_fills_missing_categories_only(models, rows):
    from lavie.curate.category import VIMEO_CATEGORIES

    table = rows.set_column(rows.schema.get_field_index("category"), "category",
                            pa.array(["Travel", None, None, None, None, None, "Music"]))
    out = run_stage("category", table, **models["clip"]["local_dir"])
    category, score = by_id(out, "category"), by_id(out, "category_score")
    # Folder categories stay and are not scored; the others are predicted among the ten.
    assert category["c0"] == "Travel" and score["c0"] is None
    assert category["c3"] == "Music" and score["c3"] is None
    for clip_id in ("c1", "c2"):
        assert category[clip_id] in VIMEO_CATEGORIES
        assert 1 / len(VIMEO_CATEGORIES) <= score[clip_id] <= 1.0
    for clip_id in ("rejected", "failed", "broken"):
        assert category[clip_id] is None and score[clip_id] is None
    assert by_id(out, "status")["broken"] == STATUS_ERROR

    everything = run_stage("category", table, overwrite=True, **models["clip"]["local_dir"])
    assert all(by_id(everything, "category_score")[f"c{i}"] is not None for i in range(4))
    assert by_id(everything, "category")["c1"] == category["c1"]


def test_category_is_the_argmax_of_clip_similarities(models, rows):
    from lavie.curate.category import VIMEO_CATEGORIES
    from lavie.curate.clip_backbone import ClipBackbone
    from lavie.curate.video import clip_frames

    out = by_id(run_stage("category", rows, **models["clip"]["named"]), "category")
    backbone = ClipBackbone(TINY_CLIP_NAME, models["clip"]["named"]["clip_pretrained"], stage="category")
    text = backbone.encode_texts([f"a frame from a {c} video" for c in VIMEO_CATEGORIES])
    for row in [r for r in rows.to_pylist() if r["clip_id"].startswith("c")]:
        frames = clip_frames(row["source_path"], row["clip_path"], 0, 16, 3, size=(42, 32))
        emb = backbone.encode_frames(frames).mean(0)
        assert out[row["clip_id"]] == VIMEO_CATEGORIES[int((emb @ text.T).argmax())]
    with pytest.raises(ValueError, match="clip.prompt"):
        build_stage("category", prompt="a video", **models["clip"]["named"])


# -- caption -------------------------------------------------------------------------------------

FAMILIES = ["qwen", "smolvlm"]


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_captions_are_deterministic_and_align_with_rows(models, rows, family):
    kwargs = dict(model=models[family], max_new_tokens=8, batch_size=1)
    out = run_stage("caption", rows, **kwargs)
    assert_untouched_rows(out, rows, "caption")
    captions, words = by_id(out, "caption"), by_id(out, "caption_words")
    for i in range(4):
        assert isinstance(captions[f"c{i}"], str)
        assert words[f"c{i}"] == len(captions[f"c{i}"].split())
    assert words["rejected"] is None and words["broken"] is None
    # Same captions again, and the same per clip when the rows come in another order.
    again = run_stage("caption", rows.take(list(range(rows.num_rows))[::-1]), **kwargs)
    assert by_id(again, "caption") == captions
    # Batched generation (left padding) gives each clip a caption of its own row.
    batched = run_stage("caption", rows, batch_size=7, model=models[family], max_new_tokens=8)
    assert batched.column("clip_id").to_pylist() == rows.column("clip_id").to_pylist()
    assert all(isinstance(by_id(batched, "caption")[f"c{i}"], str) for i in range(4))


@pytest.mark.parametrize("frames_as", ["images", "video"])
@pytest.mark.parametrize("family", FAMILIES)
def test_frames_as_images_or_video_with_an_odd_frame_count(models, rows, family, frames_as):
    # Three frames: Qwen2.5-VL's video patches span two frames, so the processor must pad.
    out = run_stage("caption", rows.slice(0, 3), model=models[family], frames_as=frames_as, frames=3,
                    max_new_tokens=4)
    assert by_id(out, "status")["c0"] == STATUS_OK
    assert isinstance(by_id(out, "caption")["c0"], str) and by_id(out, "caption")["rejected"] is None


def test_sampled_captions_follow_the_seed(models, rows):
    def sample(seed: int, batch_size: int) -> dict:
        return by_id(run_stage("caption", rows, batch_size=batch_size, model=models["qwen"], do_sample=True,
                               temperature=1.0, top_p=1.0, seed=seed, max_new_tokens=12), "caption")

    first = sample(1, 3)
    assert sample(1, 7) == first  # same seed, other batching: same captions
    other = sample(2, 3)
    assert any(other[f"c{i}"] != first[f"c{i}"] for i in range(4))


def test_missing_caption_model_is_a_clear_error(tmp_path):
    cls = get_stage("caption")
    assert cls.RESOURCES.holds_model and cls.RESOURCES.gpus
    for model in ("Qwen/Qwen2.5-VL-3B-Instruct", str(tmp_path / "no-such-model")):
        reason = cls.check_available(cls.Config(model=model))
        assert model in reason and "--set stages.caption.model=" in reason
        with pytest.raises(FileNotFoundError) as err:
            build_stage("caption", model=model).setup()
        assert model in str(err.value) and "--set stages.caption.model=" in str(err.value)
    with pytest.raises(ValueError, match="frames_as"):
        cls.Config(model=str(tmp_path), frames_as="gif")


def test_a_clip_the_captioner_fails_on_becomes_an_error_row(models, rows, monkeypatch):
    from lavie.curate.caption import CaptionStage

    generate = CaptionStage.generate

    def flaky(self, clips, clip_rows, batch):
        if any(batch["clip_id"][i] == "c1" for i in clip_rows):
            raise RuntimeError("frames the processor cannot take")
        return generate(self, clips, clip_rows, batch)

    monkeypatch.setattr(CaptionStage, "generate", flaky)
    out = run_stage("caption", rows, model=models["qwen"], max_new_tokens=4, batch_size=1)
    status, error, caption = by_id(out, "status"), by_id(out, "error"), by_id(out, "caption")
    assert status["c1"] == STATUS_ERROR and caption["c1"] is None
    assert error["c1"] == "caption: captioning failed: RuntimeError: frames the processor cannot take"
    assert status["c0"] == STATUS_OK and isinstance(caption["c0"], str)
