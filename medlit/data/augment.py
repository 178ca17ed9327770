"""Augmentation of a whole uint8 batch at once: one affine warp for the batch, each image with its own draw.

torchvision's transforms run image by image (in DataLoader workers on the CPU); at 150 px that costs
milliseconds per image, as much as training on it. `RandomAffineBatch` draws each image's parameters
where the example is loaded (cheap, and seeded per example, see `ImageTensorDataset`) and warps the batch
in one `grid_sample` on the device the batch was moved to. Its draws and geometry follow torchvision's
`RandomAffine` (nearest-neighbour sampling, black fill, whole-pixel shifts, shear along x),
`RandomHorizontalFlip` and `ColorJitter(contrast=...)`, applied in that order.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

# one row per image: angle (degrees), shift x, shift y (fractions of the side), scale, shear x (degrees),
# flip (0/1), contrast factor
NUM_PARAMS = 7


class RandomAffineBatch:
    """Random rotation, shift, zoom, shear, horizontal flip and contrast, drawn per image, applied per batch.

    `sample(generator)` draws one image's parameters; calling the object with a uint8 batch (B, C, H, W)
    and the (B, 7) parameters returns the augmented uint8 batch on the same device.
    """

    def __init__(
        self,
        degrees: float = 0.0,
        translate: Sequence[float] = (0.0, 0.0),
        scale: Sequence[float] = (1.0, 1.0),
        shear: float = 0.0,
        flip: float = 0.5,
        contrast: float = 0.0,
    ) -> None:
        self.degrees, self.translate, self.scale = float(degrees), tuple(translate), tuple(scale)
        self.shear, self.flip, self.contrast = float(shear), float(flip), float(contrast)

    def __repr__(self) -> str:
        return (
            f"RandomAffineBatch(degrees={self.degrees}, translate={self.translate}, scale={self.scale}, "
            f"shear={self.shear}, flip={self.flip}, contrast={self.contrast})"
        )

    def sample(self, generator: torch.Generator) -> Tensor:
        """One image's parameters (a float tensor of `NUM_PARAMS`), drawn from `generator`."""
        u = torch.rand(NUM_PARAMS, generator=generator, dtype=torch.float64)
        low_scale, high_scale = self.scale
        return torch.tensor(
            [
                (2 * u[0] - 1) * self.degrees,
                (2 * u[1] - 1) * self.translate[0],
                (2 * u[2] - 1) * self.translate[1],
                low_scale + u[3] * (high_scale - low_scale),
                (2 * u[4] - 1) * self.shear,
                float(u[5] < self.flip),
                1 + (2 * u[6] - 1) * self.contrast,
            ],
            dtype=torch.float32,
        )

    def __call__(self, images: Tensor, params: Tensor) -> Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"expected a uint8 batch (B, C, H, W), got {images.dtype} {tuple(images.shape)}")
        batch, _, height, width = images.shape
        params = params.to(images.device, torch.float32)
        grid = _grid(_theta(params, height, width), height, width)
        warped = F.grid_sample(images.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
        if self.contrast:
            factor = params[:, 6].view(-1, 1, 1, 1)
            mean = warped.view(batch, -1).mean(dim=1).view(-1, 1, 1, 1)
            warped = torch.addcmul(mean * (1 - factor), warped, factor)
        return warped.clamp_(0, 255).round_().to(torch.uint8)


def _grid(theta: Tensor, height: int, width: int) -> Tensor:
    """`affine_grid(theta, align_corners=False)` by broadcasting (B, H, W, 2), several times faster on CPUs."""
    xs = torch.linspace(-1 + 1 / width, 1 - 1 / width, width, device=theta.device).view(1, 1, width)
    ys = torch.linspace(-1 + 1 / height, 1 - 1 / height, height, device=theta.device).view(1, height, 1)
    rows = [
        theta[:, k, 0].view(-1, 1, 1) * xs + theta[:, k, 1].view(-1, 1, 1) * ys + theta[:, k, 2].view(-1, 1, 1)
        for k in range(2)
    ]
    return torch.stack(rows, dim=-1)


def _theta(params: Tensor, height: int, width: int) -> Tensor:
    """The (B, 2, 3) output-to-input maps in `affine_grid`'s normalised coordinates.

    torchvision's inverse affine matrix about the centre (rotation, x-shear, scale, whole-pixel shift),
    with the flip that follows the warp folded in, rescaled from pixels to [-1, 1].
    """
    angle, shift_x, shift_y, scale, shear, flip = (params[:, k] for k in range(6))
    rot, sx = torch.deg2rad(angle), torch.deg2rad(shear)
    a, c = torch.cos(rot), torch.sin(rot)
    b = -torch.cos(rot) * torch.tan(sx) - torch.sin(rot)
    d = -torch.sin(rot) * torch.tan(sx) + torch.cos(rot)
    inverse = torch.stack([d, -b, -c, a], dim=1).view(-1, 2, 2) / scale.view(-1, 1, 1)  # det(RS) = 1
    shift = torch.stack([torch.round(shift_x * width), torch.round(shift_y * height)], dim=1)
    offset = -(inverse @ shift.unsqueeze(-1))
    mirror = torch.ones_like(inverse)
    mirror[:, :, 0] = torch.where(flip > 0.5, -1.0, 1.0).view(-1, 1)
    theta = torch.cat([inverse * mirror, offset], dim=2)
    half = torch.tensor([width / 2, height / 2], device=params.device)
    theta[:, :, :2] *= half.view(1, 1, 2) / half.view(1, 2, 1)
    theta[:, :, 2] /= half.view(1, 2)
    return theta
