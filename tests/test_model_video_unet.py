"""VideoUNet / VideoSRUNet on the tiny presets: equivalence to the image UNet at init, joint
image-video frames, live temporal layers, save/load, gradient checkpointing, freezing, compile.
The released layouts' pieces are checked against direct computations in test_model_official.py."""

import copy

import pytest
import torch
from diffusers import UNet2DConditionModel

from lavie.model import VideoSRUNet, VideoUNet
from lavie.model.tiny import load_preset

B, T, H, W, L, D = 2, 5, 8, 8, 6, 32


def tiny_unet2d(stage: str = "base", seed: int = 0) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    return UNet2DConditionModel(**load_preset(stage)["unet2d"]).eval()


def inputs(seed: int = 1, channels: int = 4, frames: int = T):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, channels, frames, H, W, generator=g), torch.randn(B, L, D, generator=g)


def framewise(unet2d, sample, timestep, text, class_labels=None):
    """The image UNet on every frame: (B, C, T, H, W) -> (B, C_out, T, H, W); text (B, L, D) or (B, T, L, D)."""
    b, _, t = sample.shape[:3]
    context = text.repeat_interleave(t, 0) if text.ndim == 3 else text.flatten(0, 1)
    labels = None if class_labels is None else class_labels.repeat_interleave(t)
    out = unet2d(sample.transpose(1, 2).flatten(0, 1), timestep, context, class_labels=labels).sample
    return out.unflatten(0, (b, t)).transpose(1, 2)


def make_temporal_live(model: VideoUNet, seed: int = 3) -> None:
    """Give every zero-initialised temporal output layer random weights."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if model.is_temporal_parameter(name) and ("to_out" in name or "conv2" in name or "shift_conv" in name):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))


def static(sample: torch.Tensor) -> torch.Tensor:
    """A video whose frames all equal the first: the video GroupNorm then sees per-frame statistics."""
    return sample[:, :, :1].expand_as(sample).contiguous()


@pytest.mark.parametrize("options", [
    {"layout": "base"}, {"layout": "interp", "conditioning": "none"}, {"alpha_merge": True},
    {"alpha_merge": True, "temporal_conv": True}, {"temporal_conv": True, "temporal_modules": True},
])
def test_equals_image_unet_frame_by_frame_at_init(options):
    unet2d = tiny_unet2d()
    model = VideoUNet.from_unet2d(unet2d, **options).eval()
    sample, text = inputs()
    sample = static(sample)
    with torch.no_grad():
        video = model(sample, 10, text).sample
        joint = model(sample, 10, text, n_images=2).sample
        reference = framewise(unet2d, sample, 10, text)
    assert video.shape == (B, 4, T, H, W)
    assert (video - reference).abs().max() <= 1e-5
    assert (joint - reference).abs().max() <= 1e-5


def test_per_frame_norms_equal_image_unet_on_any_video():
    unet2d = tiny_unet2d()
    model = VideoUNet.from_unet2d(unet2d, video_norm=False).eval()
    sample, text = inputs()
    with torch.no_grad():
        assert (model(sample, 10, text).sample - framewise(unet2d, sample, 10, text)).abs().max() <= 1e-5
        # the released layout's video GroupNorm shares statistics over the frames of a video
        assert (VideoUNet.from_unet2d(unet2d).eval()(sample, 10, text).sample - framewise(unet2d, sample, 10, text)).abs().max() > 1e-3


def test_vsr_equals_upscaler_frame_by_frame_at_init():
    upscaler = tiny_unet2d("vsr")
    model = VideoSRUNet.from_unet2d(upscaler).eval()
    latents, text = inputs()
    latents = static(latents)
    low_res = static(torch.randn(B, 3, T, H, W))
    level = torch.tensor([20, 300])
    with torch.no_grad():
        out = model(latents, 500, text, low_res=low_res, noise_level=level).sample
        reference = framewise(upscaler, torch.cat([latents, low_res], 1), 500, text, class_labels=level)
        larger = model(torch.randn(1, 4, 3, 12, 20), 500, text[:1], low_res=torch.randn(1, 3, 3, 12, 20), noise_level=level[:1]).sample
    assert (out - reference).abs().max() <= 1e-5
    assert larger.shape == (1, 4, 3, 12, 20)  # trained on patches, applied to frames of any size


def test_vsr_trains_only_temporal_layers():
    model = VideoSRUNet.from_unet2d(tiny_unet2d("vsr"))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(model.is_temporal_parameter(n) for n in trainable)
    assert any(".attentions.0.temporal_conv.conv1." in n for n in trainable)  # 3D convs before the transformers
    assert any(".temporal_attn.to_q." in n for n in trainable)  # temporal attention inside them
    assert any(n.startswith("mid_temporal_block.shift_conv.") for n in trainable)  # block-level temporal modules
    assert not any(p.requires_grad for n, p in model.named_parameters() if n.startswith("unet2d.down_blocks.0.resnets."))


def test_image_frames_ignore_video_frames_and_carry_own_captions():
    unet2d = tiny_unet2d()
    model = VideoUNet.from_unet2d(unet2d, temporal_conv=True, alpha_merge=True).eval()
    make_temporal_live(model)
    sample, _ = inputs()
    text = torch.randn(B, T, L, D)  # one caption per frame: images bring their own
    other = sample.clone()
    other[:, :, :3] = torch.randn(B, 4, 3, H, W)  # new video frames, same 2 image frames
    with torch.no_grad():
        a = model(sample, 10, text, n_images=2).sample
        b = model(other, 10, text, n_images=2).sample
        reference = framewise(unet2d, sample, 10, text)
    assert torch.equal(a[:, :, 3:], b[:, :, 3:])
    assert (a[:, :, 3:] - reference[:, :, 3:]).abs().max() <= 1e-5  # images see the image model
    assert (a[:, :, :3] - b[:, :, :3]).abs().max() > 1e-3


def test_one_optimiser_step_makes_frames_depend_on_each_other():
    torch.manual_seed(0)
    model = VideoUNet.from_unet2d(tiny_unet2d(), alpha_merge=True, video_norm=False)
    sample, text = inputs()
    perturbed = sample.clone()
    perturbed[:, :, 0] += 1.0

    def cross_frame_effect():
        with torch.no_grad():
            return (model(sample, 10, text).sample[:, :, 1:] - model(perturbed, 10, text).sample[:, :, 1:]).abs().max()

    model.eval()
    assert cross_frame_effect() == 0  # at init every frame is an independent image
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss = (model(sample, 10, text).sample - torch.randn(B, 4, T, H, W)).pow(2).mean()
    loss.backward()
    optimizer.step()
    model.eval()
    assert cross_frame_effect() > 1e-4


@pytest.mark.parametrize("cls,stage,options", [
    (VideoUNet, "base", {"alpha_merge": True, "temporal_conv": True, "alpha_init": 0.3}),
    (VideoUNet, "base", {"layout": "interp"}),
    (VideoSRUNet, "vsr", {}),
])
def test_save_load_round_trip(tmp_path, cls, stage, options):
    model = cls.from_unet2d(tiny_unet2d(stage), **options).eval()
    make_temporal_live(model)
    model.save_pretrained(tmp_path)
    loaded = cls.from_pretrained(tmp_path).eval()
    public = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}  # noqa: E731
    assert public(loaded.config) == public(model.config)
    state, loaded_state = model.state_dict(), loaded.state_dict()
    assert state.keys() == loaded_state.keys()
    assert all(torch.equal(state[k], loaded_state[k]) for k in state)
    sample, text = inputs()
    kwargs = {}
    if stage == "vsr":
        kwargs = {"low_res": torch.randn(B, 3, T, H, W), "noise_level": torch.tensor([5, 7])}
    if model.cond_channels:
        kwargs = {"cond": torch.randn(B, model.cond_channels, T, H, W)}
    with torch.no_grad():
        assert torch.equal(model(sample, 10, text, **kwargs).sample, loaded(sample, 10, text, **kwargs).sample)


def test_gradient_checkpointing_gives_same_gradients():
    model = VideoUNet.from_unet2d(tiny_unet2d(), temporal_conv=True, temporal_modules=True, alpha_merge=True)
    make_temporal_live(model)
    checkpointed = copy.deepcopy(model)
    checkpointed.enable_gradient_checkpointing()
    assert checkpointed.is_gradient_checkpointing and not model.is_gradient_checkpointing
    sample, text = inputs()
    grads = []
    for m in (model, checkpointed):
        m.train()
        m.zero_grad()
        m(sample, 10, text, n_images=1).sample.square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) == len(list(model.parameters()))
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("conditioning", ["none", "interpolation"])
def test_freeze_spatial_leaves_only_temporal_gradients(conditioning):
    model = VideoUNet.from_unet2d(tiny_unet2d(), conditioning=conditioning, temporal_conv=True, temporal_modules=True, alpha_merge=True)
    model.freeze_spatial()
    sample, text = inputs()
    cond = torch.randn(B, model.cond_channels, T, H, W) if model.cond_channels else None
    model(sample, 10, text, cond=cond).sample.square().mean().backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    expected = {n for n in dict(model.named_parameters()) if model.is_temporal_parameter(n)}
    if conditioning != "none":  # the new conditioning channels live in the input convolution
        expected |= {"unet2d.conv_in.weight", "unet2d.conv_in.bias"}
    assert with_grad == expected


def test_interpolation_model_from_base_starts_as_base():
    base = VideoUNet.from_unet2d(tiny_unet2d()).eval()
    make_temporal_live(base)
    conditioned = base.with_conditioning("interpolation").eval()
    assert conditioned.cond_channels == 4 and conditioned.config.conditioning == "interpolation"
    sample, text = inputs()
    with torch.no_grad():
        expected = base(sample, 10, text).sample
        got = conditioned(sample, 10, text, cond=torch.randn(B, 4, T, H, W)).sample
    assert (got - expected).abs().max() <= 1e-5  # zero-initialised conditioning weights
    # the released interpolation layout takes over every weight it shares with the base model
    interp = base.with_layout("interp")
    assert interp.config.sparse_causal and interp.config.temporal_attention == "after_ff"
    shared = {k: v for k, v in base.state_dict().items() if k in interp.state_dict() and k != "unet2d.conv_in.weight"}
    assert all(torch.equal(v, interp.state_dict()[k]) for k, v in shared.items())
    assert not any("rel_pos_bias" in k for k in interp.state_dict())


def test_rejects_bad_options_and_inputs():
    unet2d = tiny_unet2d()
    with pytest.raises(ValueError, match="conditioning"):
        VideoUNet.from_unet2d(unet2d, conditioning="keyframes")
    with pytest.raises(ValueError, match="temporal_position"):
        VideoUNet.from_unet2d(unet2d, temporal_position="sinusoidal")
    with pytest.raises(ValueError, match="layout"):
        VideoUNet.from_unet2d(unet2d, layout="long")
    with pytest.raises(ValueError, match="rope_dim"):
        VideoUNet.from_unet2d(unet2d, rope_dim=48)  # more than the 32-channel heads of the tiny model
    model = VideoUNet.from_unet2d(unet2d, conditioning="context")
    sample, text = inputs()
    with pytest.raises(ValueError, match="cond"):
        model(sample, 10, text)
    with pytest.raises(ValueError, match="n_images"):
        VideoUNet.from_unet2d(unet2d)(sample, 10, text, n_images=T + 1)
    with pytest.raises(ValueError, match="encoder_hidden_states"):
        VideoUNet.from_unet2d(unet2d)(sample, 10, torch.randn(B, T + 1, L, D))
    with pytest.raises(ValueError, match="noise-level"):
        VideoSRUNet.from_unet2d(unet2d)


def test_runs_under_torch_compile():
    model = VideoUNet.from_unet2d(tiny_unet2d(), alpha_merge=True).eval()
    make_temporal_live(model)
    compiled = torch.compile(model, backend="aot_eager")
    sample, text = inputs(frames=3)
    with torch.no_grad():
        torch.testing.assert_close(compiled(sample, 10, text, n_images=1).sample, model(sample, 10, text, n_images=1).sample)
