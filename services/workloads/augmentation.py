"""Training-time data augmentation done on the device, batch by batch.

Draws come from the trial's data generator, so the seed fixes them like the data order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def random_crop_flip(images: Tensor, generator: torch.Generator, padding: int = 4) -> Tensor:
    """Random crops of zero-padded images and random horizontal flips, independently per
    image: the CIFAR-10 augmentation of He et al. 2016 ("Deep Residual Learning for Image
    Recognition", §4.2): pad 4 pixels on each side, crop a random 32×32 window, flip with
    probability ½.

    ``images`` is (N, C, H, W); the result has the same shape, dtype and device.
    """
    n, c, h, w = images.shape
    device = images.device
    padded = F.pad(images, (padding, padding, padding, padding))
    top = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=device)
    left = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=device)
    rows = (top[:, None] + torch.arange(h, device=device))[:, None, :, None]
    cols = (left[:, None] + torch.arange(w, device=device))[:, None, None, :]
    batch = torch.arange(n, device=device)[:, None, None, None]
    channel = torch.arange(c, device=device)[None, :, None, None]
    crops = padded[batch, channel, rows, cols]
    flip = torch.rand(n, generator=generator, device=device) < 0.5
    return torch.where(flip[:, None, None, None], crops.flip(3), crops)
