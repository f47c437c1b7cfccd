"""The released LaVie layouts, piece by piece against direct computations, and the conversion of
checkpoints named as the released code names its tensors."""

import math
import re

import pytest
import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel

from lavie.model import VideoSRUNet, VideoUNet
from lavie.model.convert import ConversionError, detect_stage, from_official_checkpoint, to_official_state_dict
from lavie.model.temporal import (
    FrameLayout,
    SparseCausalAttnProcessor,
    TemporalAttention,
    VideoGroupNorm,
    apply_partial_rope,
    relative_position_bucket,
)
from lavie.model.tiny import load_preset


def t5_bucket(offset: int, num_buckets: int = 32, max_distance: int = 32) -> int:
    """The T5 formula written out for one offset (key - query)."""
    n = -offset
    half = num_buckets // 2
    bucket = half if n < 0 else 0
    n = abs(n)
    max_exact = half // 2
    if n < max_exact:
        return bucket + n
    large = max_exact + int(math.log(n / max_exact) / math.log(max_distance / max_exact) * (half - max_exact))
    return bucket + min(large, half - 1)


def test_relative_position_buckets_follow_the_t5_formula():
    offsets = torch.arange(-70, 71)
    got = relative_position_bucket(offsets, 32, 32).tolist()
    assert got == [t5_bucket(o) for o in offsets.tolist()]
    # hand-checked values: exact below 8, logarithmic to 32, one bucket per direction beyond
    assert [t5_bucket(o) for o in (0, -1, -7, -8, -15, -16, -31, -32, -100, 1, 7, 8, 100)] == [0, 1, 7, 8, 11, 12, 15, 15, 15, 17, 23, 24, 31]


def test_partial_rope_rotates_the_first_32_channels_in_interleaved_pairs():
    x = torch.randn(3, 2, 5, 40)  # (N, heads, T, head_dim)
    got = apply_partial_rope(x, 32, 10000.0)
    expected = x.clone()
    for t in range(5):
        for i in range(16):
            angle = t * 10000.0 ** (-2 * i / 32)
            c, s = math.cos(angle), math.sin(angle)
            a, b = x[:, :, t, 2 * i], x[:, :, t, 2 * i + 1]
            expected[:, :, t, 2 * i] = a * c - b * s
            expected[:, :, t, 2 * i + 1] = a * s + b * c
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(got[..., 32:], x[..., 32:])


def test_temporal_attention_with_rope_and_bias_against_a_direct_computation():
    torch.manual_seed(0)
    attn = TemporalAttention(dim=64, heads=2, head_dim=32, rope_dim=32, rel_pos_buckets=32, rel_pos_max_distance=32)
    for p in attn.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(2, 6, 3, 64)  # (B, T, positions, C)
    seq = x.transpose(1, 2).reshape(6, 6, 64)  # one sequence over T per (video, position)
    q, k, v = (proj(seq).view(6, 6, 2, 32).transpose(1, 2) for proj in (attn.to_q, attn.to_k, attn.to_v))
    q, k = apply_partial_rope(q, 32), apply_partial_rope(k, 32)
    offsets = torch.arange(6)[None, :] - torch.arange(6)[:, None]
    table = attn.rel_pos_bias.relative_attention_bias.weight  # (32, heads)
    bias = torch.stack([table[relative_position_bucket(offsets)][..., h] for h in range(2)])  # (heads, T, T)
    scores = (q / math.sqrt(32)) @ k.transpose(-1, -2) + bias
    y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(2, 3, 6, 64).transpose(1, 2)  # (B, T, positions, C)
    torch.testing.assert_close(attn(x), attn.to_out[0](y), rtol=1e-5, atol=1e-5)


def test_video_group_norm_spans_the_frames_of_a_video_and_leaves_images_alone():
    layout = FrameLayout(num_frames=5, n_images=2)
    norm = VideoGroupNorm(torch.nn.GroupNorm(4, 8, eps=1e-5), layout)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    x = torch.randn(2 * 5, 8, 3, 3)  # (B*T, C, H, W)
    got = norm(x).unflatten(0, (2, 5))
    video = x.unflatten(0, (2, 5))[:, :3].transpose(1, 2)  # (B, C, Tv, H, W)
    expected_video = F.group_norm(video, 4, norm.weight, norm.bias, 1e-5).transpose(1, 2)
    expected_images = F.group_norm(x.unflatten(0, (2, 5))[:, 3:].flatten(0, 1), 4, norm.weight, norm.bias, 1e-5)
    torch.testing.assert_close(got[:, :3], expected_video)
    torch.testing.assert_close(got[:, 3:].flatten(0, 1), expected_images)


def test_video_group_norm_gradients_match_the_5d_group_norm():
    norm = VideoGroupNorm(torch.nn.GroupNorm(4, 8, eps=1e-5), FrameLayout(num_frames=5)).double()
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    x = (torch.randn(2 * 5, 8, 3, 3, dtype=torch.float64) * 3 + 1).requires_grad_()  # (B*T, C, H, W), off-centre
    grad = torch.randn(2 * 5, 8, 3, 3, dtype=torch.float64)
    got = torch.autograd.grad(norm(x), (x, norm.weight, norm.bias), grad)
    video = x.unflatten(0, (2, 5)).transpose(1, 2)  # (B, C, T, H, W)
    expected = F.group_norm(video, 4, norm.weight, norm.bias, 1e-5).transpose(1, 2).flatten(0, 1)
    for g, e in zip(got, torch.autograd.grad(expected, (x, norm.weight, norm.bias), grad)):
        torch.testing.assert_close(g, e)


def test_sparse_causal_attention_against_a_direct_computation():
    from diffusers.models.attention_processor import Attention

    torch.manual_seed(0)
    layout = FrameLayout(num_frames=4, n_images=1)
    attn = Attention(query_dim=32, heads=1, dim_head=32)
    attn.set_processor(SparseCausalAttnProcessor(layout))
    x = torch.randn(2 * 4, 6, 32)  # (B*T, tokens, C)
    got = attn(x).unflatten(0, (2, 4))
    frames = x.unflatten(0, (2, 4))
    for b in range(2):
        for t in range(4):
            context = frames[b, t] if t == 3 else torch.cat([frames[b, 0], frames[b, max(t - 1, 0)]])  # the image frame attends to itself
            q, k, v = attn.to_q(frames[b, t]), attn.to_k(context), attn.to_v(context)
            y = ((q @ k.T) / math.sqrt(32)).softmax(-1) @ v
            torch.testing.assert_close(got[b, t], attn.to_out[0](y), rtol=1e-5, atol=1e-5)


def tiny_model(stage: str, seed: int = 0) -> VideoUNet:
    torch.manual_seed(seed)
    preset = load_preset(stage)
    cls = VideoSRUNet if stage == "vsr" else VideoUNet
    model = cls.from_unet2d(UNet2DConditionModel(**preset["unet2d"]), **preset["video"])
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))  # every layer live, the zero-initialised ones included
    return model.eval()


# Every tensor name of the released networks, as their code names them (one pattern per layer kind).
B = r"(down_blocks\.\d+|up_blocks\.\d+|mid_block)"
COMMON = [
    r"conv_in\.(weight|bias)", r"conv_out\.(weight|bias)", r"conv_norm_out\.(weight|bias)", r"time_embedding\.linear_[12]\.(weight|bias)",
    B + r"\.resnets\.\d+\.(norm1|norm2|conv1|conv2|time_emb_proj|conv_shortcut)\.(weight|bias)",
    r"down_blocks\.\d+\.downsamplers\.0\.conv\.(weight|bias)", r"up_blocks\.\d+\.upsamplers\.0\.conv\.(weight|bias)",
    B + r"\.attentions\.\d+\.(norm|proj_in|proj_out)\.(weight|bias)",
    B + r"\.attentions\.\d+\.transformer_blocks\.\d+\.(attn1|attn2)\.(to_q|to_k|to_v)\.weight",
    B + r"\.attentions\.\d+\.transformer_blocks\.\d+\.(attn1|attn2)\.to_out\.0\.(weight|bias)",
    B + r"\.attentions\.\d+\.transformer_blocks\.\d+\.(norm1|norm2|norm3)\.(weight|bias)",
    B + r"\.attentions\.\d+\.transformer_blocks\.\d+\.ff\.net\.(0\.proj|2)\.(weight|bias)",
]
TEMPORAL = {
    "base": [r"{b}\.attn_temp\.(to_q|to_k|to_v)\.weight", r"{b}\.attn_temp\.to_out\.0\.(weight|bias)", r"{b}\.norm_temp\.(weight|bias)",
             r"{b}\.attn_temp\.time_rel_pos_bias\.relative_attention_bias\.weight", r"{b}\.attn_temp\.rotary_emb\.freqs"],
    "interp": [r"{b}\.attn_temp\.(to_q|to_k|to_v)\.weight", r"{b}\.attn_temp\.to_out\.0\.(weight|bias)", r"{b}\.norm_temp\.(weight|bias)"],
    "vsr": [r"{b}\.attn_temporal\.(to_q|to_k|to_v)\.weight", r"{b}\.attn_temporal\.to_out\.0\.(weight|bias)", r"{b}\.norm_temporal\.(weight|bias)",
            r"{b}\.attn_temporal\.time_rel_pos_bias\.relative_attention_bias\.weight", r"{b}\.attn_temporal\.rotary_emb\.freqs",
            B + r"\.attentions\.\d+\.resblock_temporal\.(norm1|conv1|norm2|conv2)\.(weight|bias)",
            r"(down_temporal_blocks\.\d+|up_temporal_blocks\.\d+|mid_temporal_block)\.resblocks_3d_t\.(norm1|conv1|time_emb_proj|norm2|conv2)\.(weight|bias)",
            r"(down_temporal_blocks\.\d+|up_temporal_blocks\.\d+|mid_temporal_block)\.resblocks_3d_s\.(norm1|conv1|time_emb_proj|norm2|conv2)\.(weight|bias)",
            r"(down_temporal_blocks\.\d+|up_temporal_blocks\.\d+|mid_temporal_block)\.shift_conv\.(weight|bias)",
            r"temporal_rotary_emb\.freqs", r"class_embedding\.weight"],
}


@pytest.mark.parametrize("stage", ["base", "interp", "vsr"])
def test_official_names_convert_and_round_trip(stage):
    model = tiny_model(stage)
    official = to_official_state_dict(model, stage)
    block = B + r"\.attentions\.\d+\.transformer_blocks\.\d+"
    patterns = [re.compile(p) for p in COMMON + [t.replace("{b}", block) for t in TEMPORAL[stage]]]
    unmatched = [k for k in official if not any(p.fullmatch(k) for p in patterns)]
    assert not unmatched, unmatched[:5]
    unused = [p.pattern for p in patterns[len(COMMON):] if not any(p.fullmatch(k) for k in official)]
    assert not unused  # every temporal layer kind of the released network is there
    assert detect_stage(official) == stage

    converted = from_official_checkpoint({"ema": official}, dict(model.unet2d.config), stage)
    assert converted.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(v, converted.state_dict()[k]) for k, v in model.state_dict().items())
    assert not converted.training


def test_conversion_refuses_wrong_stage_file_and_image_model(tmp_path):
    model = tiny_model("base")
    official = to_official_state_dict(model, "base")
    config = dict(model.unet2d.config)
    with pytest.raises(ConversionError, match="holds the base network, not interp"):
        from_official_checkpoint(official, config, "interp")
    junk = tmp_path / "lavie_base.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ConversionError, match="not a PyTorch checkpoint"):
        from_official_checkpoint(junk, config, "base")
    with pytest.raises(ConversionError, match="not found"):
        from_official_checkpoint(tmp_path / "missing.pt", config, "base")
    with pytest.raises(ConversionError, match="has shape"):
        from_official_checkpoint(official, {**config, "cross_attention_dim": 48}, "base")
    with pytest.raises(ConversionError, match="unknown tensor 'extra.weight'"):
        from_official_checkpoint({**official, "extra.weight": torch.zeros(1)}, config, "base")
    incomplete = {k: v for k, v in official.items() if not k.startswith("conv_out.")}
    with pytest.raises(ConversionError, match="lacks 2 tensors"):
        from_official_checkpoint(incomplete, config, "base")
    odd = dict(official)
    odd[next(k for k in odd if k.endswith("rotary_emb.freqs"))] = torch.ones(16)
    with pytest.raises(ConversionError, match="standard 32-dim rotary"):
        from_official_checkpoint(odd, config, "base")
    with pytest.raises(ConversionError, match="no LaVie temporal layers"):
        from_official_checkpoint({"conv_in.weight": torch.zeros(1)}, config, "base")
