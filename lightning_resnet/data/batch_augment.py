"""Augmentation of a whole batch in one call, every image drawing its own random parameters.

A torchvision v2 op applied to a (N, 3, H, W) tensor draws ONE set of parameters for the batch, which is
why augmentation used to run image by image. `BatchAugment(ops)` maps each configured v2 op, through the
`BATCHED` registry (op class -> batched op), to an op that draws a parameter vector of length N and applies
it in one tensor call (`grid_sample` with N affine matrices, blends with N factors, ...); an op with no
batched form, or with settings its batched form does not cover, runs image by image as before, logged
once naming it. Parameters are drawn from the global torch RNG on the CPU, the same way on every device,
so the data module's per-epoch seeding decides them (`data.sampling`).

Why not kornia.augmentation: it draws RandAugment's and TrivialAugment's op, and ColorJitter's order,
once per batch rather than per image, and works on floats only; these ops follow v2's own parameter
draws and kernels (`torchvision.transforms.v2.functional`), per image.

Pixels against per-image v2 on uint8 tensors: the same parameter ranges and formulas, computed in float32
in [0, 1] and rounded once at the end (v2 truncates to uint8 after each step), so a pixel differs by at
most a grey level or two for the colour ops; nearest-neighbour geometry (v2's default) gathers the source
pixels as they are, uint8 included, and only a sample point on a pixel boundary may round the other way.
`RandomResizedCrop` resizes bilinearly without v2's antialiasing (a softer/sharper crop when it shrinks
by more than 2x).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import InterpolationMode, v2

from lightning_resnet.compat import auto_augment_space
from lightning_resnet.data.worker_batches import batch_buffer, shareable

log = logging.getLogger(__name__)

BatchOp = Callable[[torch.Tensor], torch.Tensor]
_logged: set[str] = set()  # fallbacks already logged in this process


# -- kernels: float (N, C, H, W) in [0, 1], per-image parameters of shape (N,) ------------------------------
def _per_image(values: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    return values.to(images.device, images.dtype).view(-1, 1, 1, 1)


def _blend(images: torch.Tensor, other: torch.Tensor | float, factor: torch.Tensor) -> torch.Tensor:
    """factor * images + (1 - factor) * other, clamped to [0, 1] (v2's `_blend`)."""
    ratio = _per_image(factor, images)
    return (images * ratio + (1.0 - ratio) * other).clamp_(0.0, 1.0)


def _gray(images: torch.Tensor) -> torch.Tensor:
    r, g, b = images.unbind(dim=-3)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(-3)


def brightness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(images, 0.0, factor)


def saturation(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(images, _gray(images), factor)


def contrast(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(images, _gray(images).mean(dim=(-3, -2, -1), keepdim=True), factor)


def hue(images: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue by `shift` turns (in [-0.5, 0.5]), through HSV as v2's `adjust_hue`."""
    value, _ = images.max(dim=-3)
    low, _ = images.min(dim=-3)
    spread = value - low
    sat = torch.where(value > 0, spread / value.clamp(min=1e-12), torch.zeros_like(value))
    safe = torch.where(spread > 0, spread, torch.ones_like(spread))
    r, g, b = ((value.unsqueeze(-3) - images) / safe.unsqueeze(-3)).unbind(dim=-3)
    red, green = images[:, 0] == value, images[:, 1] == value
    h = torch.where(red, b - g, torch.where(green, 2.0 + r - b, 4.0 + g - r))
    h = torch.where(spread > 0, h, torch.zeros_like(h))
    h = (h / 6.0 + 1.0 + shift.to(images.device, images.dtype).view(-1, 1, 1)).remainder(1.0)
    # HSV -> RGB: each channel is v * (1 - s * clamp(min(k, 4 - k), 0, 1)), k = (n + 6h) mod 6, n = 5, 3, 1
    k = (torch.tensor([5.0, 3.0, 1.0], device=images.device).view(1, 3, 1, 1) + 6.0 * h.unsqueeze(1)).remainder(6.0)
    ramp = torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)
    return (value.unsqueeze(1) * (1.0 - sat.unsqueeze(1) * ramp)).clamp_(0.0, 1.0)


def sharpness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with v2's 3x3 smoothing of the interior (borders kept), per-image factors."""
    channels, height, width = images.shape[-3:]
    if height <= 2 or width <= 2:
        return images
    kernel = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]], device=images.device) / 13.0
    blurred = images.clone()
    blurred[..., 1:-1, 1:-1] = F.conv2d(images, kernel.expand(channels, 1, 3, 3).to(images.dtype), groups=channels)
    return _blend(images, blurred, factor)


def posterize(images: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """Keep the top `bits` bits of each 8-bit value (v2's uint8 `posterize`), on the 0-255 scale."""
    step = _per_image(2.0 ** (8 - bits.clamp(0, 8).to(torch.float32)), images)
    return ((images * 255.0).round_() / step).floor_().mul_(step).div_(255.0)


def solarize(images: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    return torch.where(images >= _per_image(threshold, images), 1.0 - images, images)


def affine(
    images: torch.Tensor,
    angle: torch.Tensor,
    translate: torch.Tensor,
    scale: torch.Tensor,
    shear: torch.Tensor,
    center: Sequence[float] | None = None,
    interpolation: str = "nearest",
    fill: Sequence[float] | None = None,
) -> torch.Tensor:
    """v2's `affine` with per-image angle (N,), translate (N, 2) pixels, scale (N,), shear (N, 2) degrees:
    the same inverse matrices (`_get_inverse_affine_matrix`) and sampling grid, one `grid_sample` call
    (nearest: one gather, on any dtype).
    `center` in pixels (None: the image centre); `fill` in [0, 1] per channel (None: zeros)."""
    n, channels, height, width = images.shape
    dtype = torch.float64  # the matrices in double, as v2 computes them in Python floats
    cx, cy = (0.0, 0.0) if center is None else (center[0] - width * 0.5, center[1] - height * 0.5)
    rot, sx, sy = (torch.deg2rad(v.to(dtype)) for v in (angle, shear[:, 0], shear[:, 1]))
    tx, ty, s = translate[:, 0].to(dtype), translate[:, 1].to(dtype), scale.to(dtype)
    a = torch.cos(rot - sy) / torch.cos(sy)
    b = -(a * torch.tan(sx) + torch.sin(rot))
    c = torch.sin(rot - sy) / torch.cos(sy)
    d = torch.cos(rot) - c * torch.tan(sx)
    m0, m1, m3, m4 = d / s, -b / s, -c / s, a / s
    m2 = cx - m0 * (cx + tx) - m1 * (cy + ty)
    m5 = cy - m3 * (cx + tx) - m4 * (cy + ty)
    theta = torch.stack([m0, m1, m2, m3, m4, m5], dim=1).view(n, 2, 3).to(torch.float32)
    theta = (theta.transpose(1, 2) / torch.tensor([0.5 * width, 0.5 * height])).to(images.device)
    on = {"device": images.device}  # the grid is made where the images are: no (N, H, W, 2) transfer
    xs = torch.linspace((1.0 - width) * 0.5, (width - 1.0) * 0.5, width, **on)
    ys = torch.linspace((1.0 - height) * 0.5, (height - 1.0) * 0.5, height, **on)
    ones = torch.ones(height, width, **on)
    base = torch.stack([xs.expand(height, width), ys.unsqueeze(1).expand(height, width), ones], -1)
    grid = (base.view(1, -1, 3) @ theta).view(n, height, width, 2)
    if interpolation == "nearest":
        return _sample_nearest(images, grid, fill)
    grid = grid.to(images.dtype)
    # v2 blends a given fill through a sampled mask (with bilinear this darkens the edge even for fill 0);
    # without one it is plain zero padding
    if fill is None:
        return F.grid_sample(images, grid, mode=interpolation, padding_mode="zeros", align_corners=False)
    ones = torch.ones((n, 1, height, width), dtype=images.dtype, device=images.device)
    out, mask = F.grid_sample(torch.cat([images, ones], 1), grid, mode=interpolation, align_corners=False).split(
        [channels, 1], dim=1
    )
    fill_ = torch.tensor(list(fill), dtype=images.dtype, device=images.device).view(1, -1, 1, 1).expand_as(out)
    return (out - fill_) * mask + fill_


def _sample_nearest(images: torch.Tensor, grid: torch.Tensor, fill: Sequence[float] | None) -> torch.Tensor:
    """`grid_sample(mode="nearest", align_corners=False)` as a gather, the same pixels (it rounds half to
    even too) on any dtype: a uint8 batch needs no float copy, and a gather is ~3x faster on a CPU.
    Pixels from outside the image get `fill` (in [0, 1], scaled to 0-255 for uint8; None: zeros)."""
    n, channels, height, width = images.shape
    x = ((grid[..., 0] + 1) * width - 1).div_(2).round_()
    y = ((grid[..., 1] + 1) * height - 1).div_(2).round_()
    outside = ((x < 0) | (x > width - 1) | (y < 0) | (y > height - 1)).unsqueeze(1)
    index = y.clamp_(0, height - 1).mul_(width).add_(x.clamp_(0, width - 1)).long()
    flat = images.reshape(n, channels, height * width)
    out = flat.gather(2, index.view(n, 1, -1).expand(n, channels, -1)).view(n, channels, height, width)
    if fill is None or not any(fill):
        return out.masked_fill_(outside, 0)
    values = torch.tensor(fill) if images.is_floating_point() else (torch.tensor(fill) * 255).round()
    return torch.where(outside, values.to(images.device, images.dtype).view(1, -1, 1, 1), out)


def _uniform(n: int, low: float, high: float) -> torch.Tensor:
    return torch.empty(n).uniform_(low, high)


def _apply_to(images: torch.Tensor, where: torch.Tensor, op: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """`op` on the images selected by the boolean mask `where`, in one call; the others unchanged (a new tensor)."""
    index = where.nonzero().squeeze(1)
    if len(index) == len(images):
        return op(images)
    if not len(index):
        return images
    if images.device.type == "cpu":  # numpy's row gather/scatter are memcpys, torch's CPU index ops are not
        out = images.clone()
        rows = index.numpy()
        out.numpy()[rows] = op(torch.from_numpy(out.numpy()[rows])).numpy()
        return out
    index = index.to(images.device)
    return images.index_copy(0, index, op(images.index_select(0, index)))


def _fill(fill: Any) -> list[float] | None:
    """v2's `fill` for tensors (the uint8 scale) as [0, 1] per-channel values; a per-type dict is not covered."""
    if fill is None:
        return None
    if isinstance(fill, dict):
        values = {str(v) for v in fill.values()}
        if len(values) != 1:
            raise NotImplementedError("a per-type fill")
        fill = next(iter(fill.values()))
        if fill is None:
            return None
    values = [float(fill)] * 3 if isinstance(fill, int | float) else [float(v) for v in fill]
    return [v / 255.0 for v in (values * 3 if len(values) == 1 else values)]


def _mode(interpolation: Any) -> str:
    mode = InterpolationMode(interpolation) if not isinstance(interpolation, InterpolationMode) else interpolation
    if mode not in (InterpolationMode.NEAREST, InterpolationMode.BILINEAR):
        raise NotImplementedError(f"interpolation {mode.value}")
    return mode.value


# -- batched ops ---------------------------------------------------------------------------------------------
class Flip:
    """`RandomHorizontalFlip` / `RandomVerticalFlip`: each image flipped with probability `p`; any dtype."""

    float_only = False

    def __init__(self, p: float, dim: int) -> None:
        self.p, self.dim = p, dim

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return _apply_to(images, torch.rand(len(images)) < self.p, lambda x: x.flip(self.dim))


class ColorJitter:
    """`ColorJitter`: per image a factor in each configured range and its own order of the four
    adjustments (v2 draws `randperm(4)` per image)."""

    float_only = True
    KERNELS = (brightness, contrast, saturation, hue)

    def __init__(self, ranges: Sequence[Sequence[float] | None]) -> None:
        self.ranges = list(ranges)  # brightness, contrast, saturation, hue; None: not jittered

    @classmethod
    def from_v2(cls, op: v2.ColorJitter) -> ColorJitter:
        return cls([op.brightness, op.contrast, op.saturation, op.hue])

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        n = len(images)
        steps = [(k, _uniform(n, *r)) for k, r in zip(self.KERNELS, self.ranges, strict=True) if r is not None]
        if len(steps) == 1:  # one adjustment: no order to draw, every image in one call
            kernel, factor = steps[0]
            return kernel(images, factor)
        # only the order of the configured adjustments matters (v2 skips the others in its randperm(4))
        order = torch.rand(n, len(steps)).argsort(dim=1)  # a random permutation per image
        for step in range(len(steps)):
            for which, (kernel, factor) in enumerate(steps):
                chosen = order[:, step] == which
                images = _apply_to(images, chosen, lambda x, k=kernel, f=factor[chosen]: k(x, f))
        return images


class Affine:
    """`RandomAffine`: per image an angle, an integer shift (v2 rounds it), a scale and shears drawn as v2 does.
    Nearest sampling (v2's default) works on uint8 as it is; bilinear needs floats."""

    def __init__(self, op: v2.RandomAffine) -> None:
        if op.center is not None and len(op.center) != 2:
            raise NotImplementedError("center")
        self.degrees, self.translate, self.scale, self.shear = op.degrees, op.translate, op.scale, op.shear
        self.center, self.mode, self.fill = op.center, _mode(op.interpolation), _fill(op.fill)
        self.float_only = self.mode != "nearest"

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        n, _, height, width = images.shape
        angle = _uniform(n, *self.degrees)
        translate = torch.zeros(n, 2)
        if self.translate is not None:
            max_dx, max_dy = self.translate[0] * width, self.translate[1] * height
            translate = torch.stack([_uniform(n, -max_dx, max_dx), _uniform(n, -max_dy, max_dy)], 1).round()
        scale = _uniform(n, *self.scale) if self.scale is not None else torch.ones(n)
        shear = torch.zeros(n, 2)
        if self.shear is not None:
            shear[:, 0] = _uniform(n, self.shear[0], self.shear[1])
            if len(self.shear) == 4:
                shear[:, 1] = _uniform(n, self.shear[2], self.shear[3])
        return affine(images, angle, translate, scale, shear, self.center, self.mode, self.fill)


class ResizedCrop:
    """`RandomResizedCrop`: per image v2's box (10 tries at a random area and aspect ratio, else the
    centre crop), resized bilinearly (no antialiasing) in one `grid_sample`."""

    float_only = True

    def __init__(self, op: v2.RandomResizedCrop) -> None:
        if _mode(op.interpolation) != "bilinear":
            raise NotImplementedError("interpolation other than bilinear")
        self.size, self.scale, self.ratio = op.size, op.scale, op.ratio

    def boxes(self, n: int, height: int, width: int) -> torch.Tensor:
        """(n, 4) top, left, height, width, as v2's `make_params` draws them for each image."""
        area = height * width
        log_ratio = torch.log(torch.tensor(self.ratio, dtype=torch.float64))
        target = area * torch.empty(n, 10, dtype=torch.float64).uniform_(*self.scale)
        aspect = torch.exp(torch.empty(n, 10, dtype=torch.float64).uniform_(log_ratio[0].item(), log_ratio[1].item()))
        w = torch.sqrt(target * aspect).round()
        h = torch.sqrt(target / aspect).round()
        ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
        first = ok.float().argmax(dim=1)
        w, h = w.gather(1, first[:, None]).squeeze(1), h.gather(1, first[:, None]).squeeze(1)
        top = (torch.rand(n, dtype=torch.float64) * (height - h + 1)).floor()
        left = (torch.rand(n, dtype=torch.float64) * (width - w + 1)).floor()
        none = ~ok.any(dim=1)
        if none.any():  # v2's fallback: the whole image, cropped to the ratio range, centred
            in_ratio = width / height
            cw, ch = float(width), float(height)
            if in_ratio < min(self.ratio):
                ch = float(round(cw / min(self.ratio)))
            elif in_ratio > max(self.ratio):
                cw = float(round(ch * max(self.ratio)))
            w[none], h[none] = cw, ch
            top[none], left[none] = float((height - ch) // 2), float((width - cw) // 2)
        return torch.stack([top, left, h, w], dim=1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        n, _, height, width = images.shape
        out_h, out_w = self.size
        top, left, h, w = self.boxes(n, height, width).to(images.device, torch.float32).unbind(1)
        # output pixel centre (o + 0.5) / out * box + corner, in grid_sample's [-1, 1] (align_corners=False)
        xs = (torch.arange(out_w, device=images.device) + 0.5) / out_w
        ys = (torch.arange(out_h, device=images.device) + 0.5) / out_h
        gx = ((left[:, None] + xs[None] * w[:, None]) / width * 2 - 1)[:, None, :].expand(n, out_h, out_w)
        gy = ((top[:, None] + ys[None] * h[:, None]) / height * 2 - 1)[:, :, None].expand(n, out_h, out_w)
        grid = torch.stack([gx, gy], dim=-1).to(images.dtype)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _shear_x(x: torch.Tensor, m: torch.Tensor, mode: str, fill: list[float] | None) -> torch.Tensor:
    shear = torch.stack([torch.rad2deg(torch.atan(m)), torch.zeros_like(m)], 1)
    return affine(x, torch.zeros_like(m), torch.zeros(len(m), 2), torch.ones_like(m), shear, (0.0, 0.0), mode, fill)


def _shear_y(x: torch.Tensor, m: torch.Tensor, mode: str, fill: list[float] | None) -> torch.Tensor:
    shear = torch.stack([torch.zeros_like(m), torch.rad2deg(torch.atan(m))], 1)
    return affine(x, torch.zeros_like(m), torch.zeros(len(m), 2), torch.ones_like(m), shear, (0.0, 0.0), mode, fill)


def _translate(axis: int) -> Callable[..., torch.Tensor]:
    def shift(x: torch.Tensor, m: torch.Tensor, mode: str, fill: list[float] | None) -> torch.Tensor:
        translate = torch.zeros(len(m), 2)
        translate[:, axis] = m.trunc()  # v2: int(magnitude)
        return affine(x, torch.zeros_like(m), translate, torch.ones_like(m), torch.zeros(len(m), 2), None, mode, fill)

    return shift


def _rotate(x: torch.Tensor, m: torch.Tensor, mode: str, fill: list[float] | None) -> torch.Tensor:
    # v2's rotate builds the affine matrix of -angle
    return affine(x, -m, torch.zeros(len(m), 2), torch.ones_like(m), torch.zeros(len(m), 2), None, mode, fill)


def _colour(kernel: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable[..., torch.Tensor]:
    return lambda x, m, mode, fill: kernel(x, 1.0 + m)


# v2's auto-augment op names -> (images, magnitudes, interpolation, fill) -> images
AUTO_KERNELS: dict[str, Callable[..., torch.Tensor]] = {
    "Identity": lambda x, m, mode, fill: x,
    "ShearX": _shear_x,
    "ShearY": _shear_y,
    "TranslateX": _translate(0),
    "TranslateY": _translate(1),
    "Rotate": _rotate,
    "Brightness": _colour(brightness),
    "Color": _colour(saturation),
    "Contrast": _colour(contrast),
    "Sharpness": _colour(sharpness),
    "Posterize": lambda x, m, mode, fill: posterize(x, m.trunc()),
    "Solarize": lambda x, m, mode, fill: solarize(x, m),
    "AutoContrast": lambda x, m, mode, fill: v2.functional.autocontrast(x),
    "Equalize": lambda x, m, mode, fill: v2.functional.equalize(x),
    "Invert": lambda x, m, mode, fill: 1.0 - x,
}


class AutoAugment:
    """`RandAugment` (`num_ops` rounds at a fixed magnitude bin) and `TrivialAugmentWide` (one round at a
    random bin): per image and round an op from v2's own augmentation space, a magnitude and a sign; each
    op then runs once on the images that drew it."""

    float_only = True

    def __init__(self, op: v2.RandAugment | v2.TrivialAugmentWide) -> None:
        self.space = auto_augment_space(op)  # {name: (magnitudes(num_bins, height, width), signed)}
        unknown = sorted(set(self.space) - set(AUTO_KERNELS))
        if unknown:
            raise NotImplementedError(f"ops {unknown}")
        self.rounds = op.num_ops if isinstance(op, v2.RandAugment) else 1
        self.bin = op.magnitude if isinstance(op, v2.RandAugment) else None  # None: random bin per image
        self.bins, self.mode, self.fill = op.num_magnitude_bins, _mode(op.interpolation), _fill(op.fill)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        n, _, height, width = images.shape
        names = list(self.space)
        for _ in range(self.rounds):
            which = torch.randint(len(names), (n,))
            bins = torch.full((n,), self.bin) if self.bin is not None else torch.randint(self.bins, (n,))
            negate = torch.rand(n) <= 0.5
            for k, name in enumerate(names):
                chosen = which == k
                if not chosen.any():
                    continue
                magnitudes_fn, signed = self.space[name]
                table = magnitudes_fn(self.bins, height, width)
                m = torch.zeros(n) if table is None else table.to(torch.float32)[bins]
                if signed:
                    m = torch.where(negate, -m, m)
                kernel = AUTO_KERNELS[name]
                images = _apply_to(images, chosen, lambda x, f=kernel, mm=m[chosen]: f(x, mm, self.mode, self.fill))
        return images


class PerImage:
    """The fallback: the v2 op image by image (each draws its own parameters), on uint8 or float images."""

    float_only = False

    def __init__(self, op: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.op = op

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.op(image) for image in images])


BATCHED: dict[type, Callable[[Any], BatchOp]] = {
    v2.RandomHorizontalFlip: lambda op: Flip(op.p, dim=-1),
    v2.RandomVerticalFlip: lambda op: Flip(op.p, dim=-2),
    v2.ColorJitter: ColorJitter.from_v2,
    v2.RandomAffine: Affine,
    v2.RandomResizedCrop: ResizedCrop,
    v2.RandAugment: AutoAugment,
    v2.TrivialAugmentWide: AutoAugment,
}


def batched_op(op: Any) -> BatchOp:
    """The batched form of one v2 op (exact type: a subclass may change what it draws), else `PerImage`."""
    factory = BATCHED.get(type(op))
    reason = "no batched form"
    if factory is not None:
        try:
            return factory(op)
        except NotImplementedError as err:
            reason = f"its batched form does not cover {err}"
    name = type(op).__name__
    if name not in _logged:
        _logged.add(name)
        log.info("augment op %s runs image by image (%s); batched ops: %s", name, reason, _names())
    return PerImage(op)


def _names() -> str:
    return ", ".join(sorted(t.__name__ for t in BATCHED))


class BatchAugment:
    """The `augment.ops` as batched ops over a (N, 3, H, W) batch, uint8 or float in [0, 1].

    Ops that need floats get the batch in [0, 1] float32; a uint8 batch stays uint8 through the ops
    that don't (a flip). `to_uint8=True` (the DataLoader workers: only uint8 travels between processes)
    rounds the result back to uint8; False (on the training device) returns float in [0, 1].
    """

    def __init__(self, ops: Sequence[Any], to_uint8: bool = True) -> None:
        self.ops = [batched_op(op) for op in ops]
        self.to_uint8 = to_uint8

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        for op in self.ops:
            if getattr(op, "float_only", True) and not images.is_floating_point():
                images = images.to(torch.float32).div_(255.0)
            images = op(images)
        if self.to_uint8:
            if images.is_floating_point():  # rounded into a uint8 batch, in shared memory in a worker
                return batch_buffer(images.shape).copy_(images.mul(255.0).round_().clamp_(0, 255))
            return shareable(images)
        return images if images.is_floating_point() else images.to(torch.float32).div_(255.0)


class Normalize(nn.Module):
    """uint8 or [0, 1] float (N, 3, H, W) -> float32 (x - mean) / std, one fused multiply-add per batch."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.mean, self.std = [float(m) for m in mean], [float(s) for s in std]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        device = images.device
        std = torch.tensor(self.std, device=device).view(1, -1, 1, 1)
        mean = torch.tensor(self.mean, device=device).view(1, -1, 1, 1)
        scale = 1.0 / (255.0 * std) if images.dtype == torch.uint8 else 1.0 / std
        return images.to(torch.float32, copy=True).mul_(scale).add_(-mean / std)  # one new tensor, then in place
