"""Interpolation (LaVie §3.2) and context-frame (Video LDM §3.2) conditioning."""

import pytest
import torch

from lavie.model import context_conditioning, interpolated_length, interpolation_conditioning


def test_interpolation_conditioning_16_to_61_frames():
    latents = torch.randn(2, 4, 16, 3, 5)
    cond = interpolation_conditioning(latents)
    assert interpolated_length(16) == 61
    assert cond.shape == (2, 4, 61, 3, 5)
    for key in range(16):
        assert torch.equal(cond[:, :, 4 * key], latents[:, :, key])  # key frame i at output frame 4i
    # in-between frames repeat the nearest key frame, the earlier one on a tie
    assert torch.equal(cond[:, :, 1], latents[:, :, 0]) and torch.equal(cond[:, :, 2], latents[:, :, 0])
    assert torch.equal(cond[:, :, 3], latents[:, :, 1])
    # the released sampler's layout: 16 frames repeated 4 times, less the first and the last two
    released = latents.repeat_interleave(4, dim=2)[:, :, 1:-2]
    assert torch.equal(cond, released)


def test_interpolation_conditioning_other_factors():
    latents = torch.randn(1, 4, 3, 2, 2)
    assert interpolation_conditioning(latents, factor=2).shape == (1, 4, 5, 2, 2)
    assert torch.equal(interpolation_conditioning(latents, factor=1), latents)
    with pytest.raises(ValueError, match="factor"):
        interpolation_conditioning(latents, factor=0)


@pytest.mark.parametrize("num_context", [0, 1, 2])
def test_context_conditioning_masks_all_but_first_frames(num_context):
    latents = torch.randn(2, 4, 6, 3, 3)
    cond = context_conditioning(latents, num_context)
    assert cond.shape == (2, 5, 6, 3, 3)
    assert torch.equal(cond[:, :4, :num_context], latents[:, :, :num_context])
    assert not cond[:, :4, num_context:].any()
    assert cond[:, 4, :, 0, 0].sum(dim=1).tolist() == [num_context] * 2


def test_context_conditioning_rejects_too_many_frames():
    with pytest.raises(ValueError, match="num_context"):
        context_conditioning(torch.randn(1, 4, 2, 2, 2), 3)
