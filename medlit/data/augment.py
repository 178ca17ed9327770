"""Augmentation of a whole uint8 batch at once: one affine warp for the batch, each image with its own draw.

torchvision's transforms run image by image (in DataLoader workers on the CPU); at 150 px that costs
milliseconds per image, as much as training on it. `RandomAffineBatch` draws each image's parameters
where the example is loaded (cheap, and seeded per example, see `ImageTensorDataset`) and warps the batch
in one `grid_sample` on the device the batch was moved to. Its draws and geometry follow torchvision's
`RandomAffine` (nearest-neighbour sampling, black fill, whole-pixel shifts, shear along x),
`RandomHorizontalFlip` and `ColorJitter(contrast=...)`, applied in that order. Then come the intensity changes
of another X-ray machine or exposure, each off unless set: brightness (a shift of every pixel), gamma (a
power of the [0, 1] intensities), Gaussian blur and Gaussian noise, each drawn per image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

# one row per image: angle (degrees), shift x, shift y (fractions of the side), scale, shear x (degrees),
# flip (0/1), contrast factor, brightness shift (fraction of 255), gamma, blur sigma (pixels), noise standard
# deviation (fraction of 255), noise seed (in [0, 1))
NUM_PARAMS = 12
_BLUR_RADIUS = 2  # a 5 x 5 kernel: sigmas up to about 1.5 pixels


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
        brightness: float = 0.0,
        gamma: float = 1.0,
        blur: float = 0.0,
        noise: float = 0.0,
    ) -> None:
        if gamma < 1 or min(contrast, brightness, blur, noise) < 0:
            raise ValueError("gamma must be >= 1 (a range [1/gamma, gamma]); contrast, brightness, blur, noise >= 0")
        self.degrees, self.translate, self.scale = float(degrees), tuple(translate), tuple(scale)
        self.shear, self.flip, self.contrast = float(shear), float(flip), float(contrast)
        self.brightness, self.gamma, self.blur, self.noise = float(brightness), float(gamma), float(blur), float(noise)

    def __repr__(self) -> str:
        return (
            f"RandomAffineBatch(degrees={self.degrees}, translate={self.translate}, scale={self.scale}, "
            f"shear={self.shear}, flip={self.flip}, contrast={self.contrast}, brightness={self.brightness}, "
            f"gamma={self.gamma}, blur={self.blur}, noise={self.noise})"
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
                (2 * u[7] - 1) * self.brightness,
                math.exp((2 * u[8] - 1) * math.log(self.gamma)),
                u[9] * self.blur,
                u[10] * self.noise,
                u[11],
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
        if self.brightness or self.gamma != 1 or self.blur or self.noise:
            warped = self._intensity(warped.clamp_(0, 255), params)
        return warped.clamp_(0, 255).round_().to(torch.uint8)

    def _intensity(self, images: Tensor, params: Tensor) -> Tensor:
        """Brightness, gamma, blur and noise of float images in [0, 255], each image with its own parameters."""
        per_image = params.view(len(params), -1, 1, 1, 1)[:, :, 0]  # (B, NUM_PARAMS, 1, 1)
        if self.brightness:
            images = (images + 255 * per_image[:, 7:8]).clamp_(0, 255)
        if self.gamma != 1:
            images = 255 * (images / 255).pow(per_image[:, 8:9])
        if self.blur:
            images = _gaussian_blur(images, params[:, 9])
        if self.noise:
            generator = torch.Generator(images.device).manual_seed(int(params[:, 11].sum().item() * 2**31))
            noise = torch.randn(images.shape, generator=generator, device=images.device)
            images = images + 255 * per_image[:, 10:11] * noise
        return images


def _gaussian_blur(images: Tensor, sigma: Tensor) -> Tensor:
    """Each image blurred by a 5 x 5 Gaussian of its own `sigma` (0: unchanged), as one grouped convolution."""
    batch, channels, height, width = images.shape
    offsets = torch.arange(-_BLUR_RADIUS, _BLUR_RADIUS + 1, device=images.device, dtype=images.dtype)
    weights = torch.exp(-(offsets**2) / (2 * sigma.clamp(min=1e-3).view(-1, 1) ** 2))
    weights = (weights / weights.sum(dim=1, keepdim=True)).repeat_interleave(channels, dim=0)  # (B*C, 5)
    flat = F.pad(images.reshape(1, batch * channels, height, width), [_BLUR_RADIUS] * 4, mode="replicate")
    rows = F.conv2d(flat, weights.view(-1, 1, 1, 2 * _BLUR_RADIUS + 1), groups=batch * channels)
    both = F.conv2d(rows, weights.view(-1, 1, 2 * _BLUR_RADIUS + 1, 1), groups=batch * channels)
    return both.view(batch, channels, height, width)


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
