"""The batch augmentation's intensity changes: brightness, gamma, blur and noise, each image with its own draw."""

from __future__ import annotations

import math

import torch

from medlit.data.augment import NUM_PARAMS, RandomAffineBatch


def params(count: int, **values: float) -> torch.Tensor:
    """Identity geometry (scale 1, contrast 1, gamma 1) with the named intensity parameters set."""
    row = torch.zeros(NUM_PARAMS)
    row[3] = row[6] = row[8] = 1.0
    columns = {"brightness": 7, "gamma": 8, "blur": 9, "noise": 10, "seed": 11}
    for name, value in values.items():
        row[columns[name]] = value
    return row.repeat(count, 1)


def test_brightness_and_gamma_change_each_pixel_as_defined():
    images = torch.tensor([0, 64, 128, 250], dtype=torch.uint8).view(1, 1, 2, 2).repeat(2, 1, 1, 1)
    brighter = RandomAffineBatch(brightness=0.2)(images, params(2, brightness=0.1))
    assert brighter[0].flatten().tolist() == [26, 90, 154, 255]  # + 25.5, rounded, clamped at 255
    darker = RandomAffineBatch(gamma=2.0)(images, params(2, gamma=2.0))
    expected = [round(255 * (v / 255) ** 2) for v in (0, 64, 128, 250)]
    assert darker[0].flatten().tolist() == expected


def test_blur_spreads_a_point_by_its_sigma_and_keeps_flat_images():
    point = torch.zeros(1, 1, 9, 9, dtype=torch.uint8)
    point[0, 0, 4, 4] = 255
    sigma = 1.0
    out = RandomAffineBatch(blur=1.5)(point, params(1, blur=sigma)).float()
    weights = [math.exp(-(k**2) / (2 * sigma**2)) for k in range(-2, 3)]
    centre = 255 * (weights[2] / sum(weights)) ** 2
    assert abs(out[0, 0, 4, 4].item() - centre) <= 0.5 and out[0, 0, 4, 3] < out[0, 0, 4, 4]
    assert out[0, 0, 0, 0] == 0, "nothing reaches beyond the kernel"
    flat = torch.full((3, 1, 8, 8), 77, dtype=torch.uint8)
    assert torch.equal(RandomAffineBatch(blur=1.5)(flat, params(3, blur=1.2)), flat)


def test_noise_has_the_drawn_spread_and_the_same_parameters_give_the_same_noise():
    grey = torch.full((2, 1, 64, 64), 128, dtype=torch.uint8)
    augment = RandomAffineBatch(noise=0.1)
    drawn = params(2, noise=0.04, seed=0.25)
    first, again = augment(grey, drawn), augment(grey, drawn)
    assert torch.equal(first, again)
    spread = (first.float() - 128).std().item()
    assert abs(spread - 0.04 * 255) < 0.6
    assert not torch.equal(augment(grey, params(2, noise=0.04, seed=0.5)), first)


def test_intensity_draws_stay_within_their_ranges_and_leave_the_geometry_draws_as_they_were():
    generator = torch.Generator().manual_seed(3)
    both = RandomAffineBatch(degrees=20, brightness=0.1, gamma=1.5, blur=1.0, noise=0.05)
    rows = torch.stack([both.sample(generator) for _ in range(200)])
    assert rows[:, 7].abs().max() <= 0.1 and rows[:, 9].max() <= 1.0 and rows[:, 10].max() <= 0.05
    assert rows[:, 8].min() >= 1 / 1.5 - 1e-6 and rows[:, 8].max() <= 1.5 + 1e-6
    geometry_only = RandomAffineBatch(degrees=20)
    generator = torch.Generator().manual_seed(3)
    assert torch.equal(geometry_only.sample(generator)[:7], rows[0, :7])


def test_the_augmentation_grid_draws_the_batch_augmentation_the_training_device_applies():
    """A batch augmentation that always flips and changes nothing else: every draw the grid shows is the image mirrored
    left to right; without one, every draw is the image itself."""
    from medlit.data.explore import augmentation_grid

    image = torch.arange(64, dtype=torch.uint8).reshape(1, 8, 8) * 3
    flipped = augmentation_grid(image, batch_transform=RandomAffineBatch(flip=1.0), count=3)
    shown = [ax.images[0].get_array() for ax in flipped.axes]
    assert (shown[0] == image[0].numpy()).all()
    assert all((draw == image[0].flip(-1).numpy()).all() for draw in shown[1:])
    plain = augmentation_grid(image, count=2)
    assert all((ax.images[0].get_array() == image[0].numpy()).all() for ax in plain.axes)
