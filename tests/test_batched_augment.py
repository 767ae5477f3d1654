"""Batched augmentation (`data.batch_augment`): one call per batch, every image drawing its own parameters,
the same kernels as torchvision v2 image by image, and the batched read of the pixel cache."""

import logging

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from lightning_resnet.data import batch_augment as ba
from lightning_resnet.data.datasets import PixelDataset
from lightning_resnet.data.pixels import PixelFile
from lightning_resnet.data.sampling import EpochSampler, EpochSeededDataset
from lightning_resnet.data.transforms import collate


def photos(n: int = 6, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Smooth colour fields plus noise: every kernel changes them visibly."""
    rng = np.random.default_rng(seed)
    coarse = torch.as_tensor(rng.random((n, 3, 4, 4)), dtype=torch.float32)
    smooth = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return (smooth + 0.1 * torch.as_tensor(rng.random((n, 3, size, size)), dtype=torch.float32)).clamp(0, 1)


def same(n: int, image: torch.Tensor) -> torch.Tensor:
    return image.unsqueeze(0).expand(n, -1, -1, -1).contiguous()


# -- the kernels against v2's, image by image, with the same parameters ---------------------------------------
@pytest.mark.parametrize(
    ("kernel", "v2_kernel", "factors"),
    [
        (ba.brightness, v2.functional.adjust_brightness, [0.2, 0.7, 1.0, 1.3, 1.8, 0.0]),
        (ba.contrast, v2.functional.adjust_contrast, [0.2, 0.7, 1.0, 1.3, 1.8, 0.0]),
        (ba.saturation, v2.functional.adjust_saturation, [0.2, 0.7, 1.0, 1.3, 1.8, 0.0]),
        (ba.hue, v2.functional.adjust_hue, [-0.5, -0.2, 0.0, 0.1, 0.3, 0.5]),
        (ba.sharpness, v2.functional.adjust_sharpness, [0.1, 0.5, 1.0, 1.5, 1.99, 0.0]),
        (ba.solarize, v2.functional.solarize, [1.0, 0.8, 0.5, 0.3, 0.1, 0.0]),
    ],
)
def test_colour_kernels_match_v2_per_image(kernel, v2_kernel, factors):
    images = photos()
    out = kernel(images, torch.tensor(factors))
    expected = torch.stack([v2_kernel(image, f) for image, f in zip(images, factors, strict=True)])
    assert torch.allclose(out, expected, atol=1e-5)


def test_posterize_matches_v2_on_uint8():
    images = (photos() * 255).round().to(torch.uint8)
    bits = [8, 7, 5, 4, 2, 1]
    out = ba.posterize(images.float() / 255, torch.tensor(bits))
    expected = torch.stack([v2.functional.posterize(image, b) for image, b in zip(images, bits, strict=True)])
    assert torch.equal((out * 255).round().to(torch.uint8), expected)


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_affine_matches_v2_per_image(mode):
    images = photos()
    angle = torch.tensor([0.0, 30.0, -25.0, 10.0, 90.0, -5.0])
    translate = torch.tensor([[0.0, 0.0], [3.0, -2.0], [-6.0, 1.0], [0.0, 5.0], [1.0, 1.0], [-2.0, -3.0]])
    scale = torch.tensor([1.0, 0.9, 1.1, 1.05, 1.0, 0.95])
    shear = torch.tensor([[0.0, 0.0], [0.15, 0.0], [-0.15, 5.0], [10.0, 0.0], [0.0, -8.0], [3.0, 3.0]])
    out = ba.affine(images, angle, translate, scale, shear, interpolation=mode, fill=[0.5, 0.2, 0.1])
    expected = torch.stack(
        [
            v2.functional.affine(
                image,
                a.item(),
                t.tolist(),
                s.item(),
                sh.tolist(),
                interpolation=getattr(v2.InterpolationMode, mode.upper()),
                fill=[0.5, 0.2, 0.1],
            )
            for image, a, t, s, sh in zip(images, angle, translate, scale, shear, strict=True)
        ]
    )
    # nearest: a sample point on a pixel boundary may round the other way; bilinear agrees closely
    close = (out - expected).abs() < 1e-4
    assert close.float().mean() > 0.99


def test_nearest_affine_samples_uint8_as_it_samples_floats():
    """The gather that replaces `grid_sample` for nearest sampling picks the same source pixels on uint8
    (no float copy) as on floats, and fills the outside with the fill scaled to 0-255."""
    images = (photos() * 255).round().to(torch.uint8)
    angle, scale = torch.tensor([0.0, 30.0, -25.0, 10.0, 90.0, -5.0]), torch.tensor([1.0, 0.9, 1.1, 1.05, 1.0, 0.7])
    translate, shear = torch.full((6, 2), 3.0), torch.tensor([[0.0, 0.0], [0.15, 0.0], [-0.15, 5.0]] * 2)
    fill = [0.5, 0.2, 0.1]
    out = ba.affine(images, angle, translate, scale, shear, fill=fill)
    as_floats = ba.affine(images / 255.0, angle, translate, scale, shear, fill=fill)
    assert out.dtype == torch.uint8
    assert torch.equal(out, (as_floats * 255).round().to(torch.uint8))
    assert (out[5, :, 0, 0] == torch.tensor([128, 51, 26], dtype=torch.uint8)).all()  # scale 0.7: a filled corner
    with_grid_sample = ba.affine(images / 255.0, angle, translate, scale, shear, interpolation="bilinear", fill=fill)
    assert (as_floats - with_grid_sample).abs().mean() < 0.05  # and it is a resampling of the same picture


@pytest.mark.parametrize("name", sorted(set(v2.TrivialAugmentWide._AUGMENTATION_SPACE)))
def test_every_auto_augment_op_matches_v2(name):
    images = (photos() * 255).round().to(torch.uint8)
    op = v2.TrivialAugmentWide()
    magnitudes_fn, signed = op._AUGMENTATION_SPACE[name]
    table = magnitudes_fn(op.num_magnitude_bins, 32, 32)
    mags = torch.zeros(6) if table is None else table.float()[torch.tensor([0, 5, 10, 20, 25, 30])]
    if signed:
        mags = mags * torch.tensor([1, -1, 1, -1, 1, -1])
    out = ba.AUTO_KERNELS[name](images.float() / 255, mags, "nearest", None)
    out = (out * 255).round().to(torch.uint8)
    expected = torch.stack(
        [
            op._apply_image_or_video_transform(image, name, float(m), interpolation=op.interpolation, fill=op._fill)
            for image, m in zip(images, mags, strict=True)
        ]
    )
    # v2 on uint8 truncates (and floors its grey image) after each step, the batched kernel rounds once
    difference = (out.int() - expected.int()).abs()
    assert (difference <= 2).float().mean() > 0.99, name


# -- per-image parameters: one batch of identical images --------------------------------------------------------
def test_flip_is_drawn_per_image_in_one_batch_and_stays_uint8():
    torch.manual_seed(0)
    image = torch.zeros(3, 8, 8, dtype=torch.uint8)
    image[..., 4:] = 200  # right half bright
    out = ba.BatchAugment([v2.RandomHorizontalFlip(p=0.5)])(same(400, image))
    assert out.dtype == torch.uint8
    flipped = out[..., :4].float().mean(dim=(1, 2, 3)) > 100
    assert 0.4 < flipped.float().mean() < 0.6
    assert torch.equal(out[~flipped], same(int((~flipped).sum()), image))  # exact pixels: no float round trip


def test_color_jitter_factors_differ_per_image_and_stay_in_range():
    torch.manual_seed(0)
    grey = torch.full((3, 8, 8), 100, dtype=torch.uint8)
    out = ba.BatchAugment([v2.ColorJitter(brightness=(0.5, 1.5))], to_uint8=False)(same(200, grey))
    factors = out.mean(dim=(1, 2, 3)) / (100 / 255)
    assert factors.min() >= 0.5 - 1e-4 and factors.max() <= 1.5 + 1e-4
    assert len(set(factors.round(decimals=3).tolist())) > 150  # one factor per image
    assert factors.min() < 0.6 and factors.max() > 1.4  # the whole range is drawn


def test_color_jitter_draws_its_order_per_image():
    """Half black, half 200: brightness 2 then contrast 0 gives grey 0.5 (the brightened half clips at 1);
    contrast 0 then brightness 2 gives twice the mean, 0.78. One batch holds both orders."""
    torch.manual_seed(0)
    image = torch.zeros(3, 8, 8, dtype=torch.uint8)
    image[:, :, 4:] = 200
    jitter = ba.ColorJitter([(2.0, 2.0), (0.0, 0.0), None, None])
    levels = jitter(same(200, image).float() / 255).mean(dim=(1, 2, 3))
    assert sorted(set(levels.round(decimals=2).tolist())) == pytest.approx([0.5, 0.78])
    assert 0.35 < (levels < 0.6).float().mean() < 0.65


def test_affine_parameters_are_drawn_per_image_within_the_keras_yoga_ranges():
    """A single bright pixel: where it lands gives each image's shift; the angle is drawn per image too."""
    torch.manual_seed(0)
    dot = torch.zeros(3, 33, 33, dtype=torch.uint8)
    dot[:, 16, 16] = 255  # the centre: rotation, scale and shear leave it, the shift moves it
    shift = ba.BatchAugment([v2.RandomAffine(degrees=30, translate=[0.2, 0.2], scale=[0.9, 1.1], shear=0.15)])
    out = shift(same(300, dot))
    ys, xs = [], []
    for image in out[:, 0]:
        where = (image > 0).nonzero().float().mean(dim=0)
        ys.append(where[0].item() - 16)
        xs.append(where[1].item() - 16)
    dx, dy = torch.tensor(xs), torch.tensor(ys)
    assert dx.abs().max() <= 0.2 * 33 + 1 and dy.abs().max() <= 0.2 * 33 + 1
    assert len(set(zip(dx.round().tolist(), dy.round().tolist(), strict=True))) > 50  # shifts per image
    assert dx.abs().max() > 5 and dy.abs().max() > 5

    torch.manual_seed(1)
    bar = torch.zeros(3, 65, 65, dtype=torch.uint8)
    bar[:, 32, 32:62] = 255  # a horizontal bar from the centre: the direction of its centroid after a rotation
    rotated = ba.BatchAugment([v2.RandomAffine(degrees=30)])(same(300, bar))
    angles = []
    for image in rotated[:, 0]:
        y, x = ((image > 0).nonzero().float() - 32).mean(dim=0)
        angles.append(torch.rad2deg(torch.atan2(-y, x)).item())
    angles = torch.tensor(angles)
    assert angles.abs().max() <= 30 + 2  # nearest-neighbour pixels: a little slack
    assert angles.min() < -20 and angles.max() > 20 and len(set(angles.round().tolist())) > 30


@pytest.mark.parametrize("op", [v2.RandAugment(num_ops=2, magnitude=9), v2.TrivialAugmentWide()])
def test_auto_augment_draws_its_ops_per_image(op):
    torch.manual_seed(0)
    image = (photos(1)[0] * 255).round().to(torch.uint8)
    out = ba.BatchAugment([op])(same(64, image))
    assert out.shape == (64, 3, 32, 32) and out.dtype == torch.uint8
    distinct = {tuple(x.flatten()[::37].tolist()) for x in out}
    assert len(distinct) > 20  # one draw for the batch would give 1


def test_random_resized_crop_boxes_are_per_image_and_in_range():
    torch.manual_seed(0)
    crop = ba.ResizedCrop(v2.RandomResizedCrop(16, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3)))
    top, left, h, w = crop.boxes(500, 40, 60).unbind(1)
    area = h * w / (40 * 60)
    assert (area > 0.2 - 0.02).all() and (area < 1.0 + 0.02).all() and len(set(area.tolist())) > 100
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 40).all() and (left + w <= 60).all()
    out = ba.BatchAugment([v2.RandomResizedCrop(16)])(torch.randint(0, 255, (5, 3, 40, 60), dtype=torch.uint8))
    assert out.shape == (5, 3, 16, 16) and out.dtype == torch.uint8


def test_an_op_without_a_batched_form_runs_per_image_logged_once(caplog):
    torch.manual_seed(0)
    ba._logged.discard("RandomInvert")
    with caplog.at_level(logging.INFO, logger="lightning_resnet.data.batch_augment"):
        augment = ba.BatchAugment([v2.RandomInvert(p=0.5)])
        ba.BatchAugment([v2.RandomInvert(p=0.5)])
    assert sum("RandomInvert runs image by image" in r.message for r in caplog.records) == 1
    out = augment(torch.zeros(200, 3, 4, 4, dtype=torch.uint8))
    assert 0.35 < (out[:, 0, 0, 0] == 255).float().mean() < 0.65  # still drawn per image


def test_same_seed_same_augmentation():
    images = (photos(16) * 255).round().to(torch.uint8)
    ops = [v2.RandomAffine(degrees=30, translate=[0.2, 0.2]), v2.RandomHorizontalFlip(), v2.ColorJitter(0.2, 0.2, 0.2)]
    augment = ba.BatchAugment(ops)
    torch.manual_seed(3)
    first = augment(images)
    torch.manual_seed(3)
    assert torch.equal(augment(images), first)
    assert not torch.equal(augment(images), first)


def test_normalize_matches_v2():
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    expected = v2.Normalize(mean, std)(v2.ToDtype(torch.float32, scale=True)(images))
    assert torch.allclose(ba.Normalize(mean, std)(images), expected, atol=1e-5)
    assert torch.allclose(ba.Normalize(mean, std)(images.float() / 255), expected, atol=1e-5)


# -- the batched read --------------------------------------------------------------------------------------------
def test_pixel_dataset_reads_a_batch_in_one_piece_in_the_samplers_order(tmp_path):
    pixels = torch.randint(0, 256, (10, 3, 4, 4), dtype=torch.uint8)
    np.save(tmp_path / "pixels.npy", pixels.numpy())
    rows, labels = [7, 2, 9, 0, 5], [1, 0, 1, 0, 1]
    for source in (pixels, PixelFile(tmp_path / "pixels.npy")):
        dataset = PixelDataset(source, rows, labels)
        batch = dataset.__getitems__([4, 0, 3, 1])
        assert torch.equal(batch.images, pixels[[5, 7, 0, 2]]) and batch.labels.tolist() == [1, 1, 0, 0]
        image, label = dataset[2]
        assert torch.equal(image, pixels[9]) and label == 1
        images, batch_labels = collate(batch)
        assert images is batch.images and batch_labels is batch.labels


def test_epoch_seeded_workers_read_batches_whole_and_repeat_an_epoch(tmp_path):
    pixels = torch.arange(4).view(4, 1, 1, 1).expand(4, 3, 8, 8).to(torch.uint8).contiguous()
    pixels[..., 4:] = 200
    dataset = PixelDataset(pixels, range(4), [0, 1, 0, 1], transform=ba.BatchAugment([v2.RandomHorizontalFlip()]))
    calls = []
    getitems = PixelDataset.__getitems__

    def counting(self, indices):
        calls.append(len(indices))
        return getitems(self, indices)

    PixelDataset.__getitems__ = counting  # only this process's calls are seen: count with no workers first
    try:
        list(DataLoader(EpochSeededDataset(dataset), batch_size=4, collate_fn=collate))
    finally:
        PixelDataset.__getitems__ = getitems
    assert calls == [4]  # one batched read, not four items

    def epoch(sampler_epoch: int) -> list[torch.Tensor]:
        sampler = EpochSampler(4, seed=0)
        sampler.epoch = sampler_epoch
        loader = DataLoader(
            EpochSeededDataset(dataset), batch_size=2, sampler=sampler, collate_fn=collate, num_workers=1
        )
        return [images for images, _ in loader]

    first, again, other = epoch(0), epoch(0), epoch(1)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))  # same seed and epoch: same flips
    assert first[0].dtype == torch.uint8 and first[0].shape == (2, 3, 8, 8)
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))
