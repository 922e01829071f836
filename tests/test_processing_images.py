"""Image processors: the same pixel_values (within 1e-2) and pixel_mask as transformers'
ViltImageProcessor / ViTImageProcessor on real files of several sizes and modes; inputs of
every kind; errors that name the file; the fast paths (threads, uint8 workers, JPEG draft)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from vilt import ViltConfig, ViTConfig
from vilt.processing import ImageInputError, ImageProcessor, ViTImageProcessor

transformers = pytest.importorskip("transformers")
# The PIL reference pipeline: with torchvision installed, transformers' default image
# processors resize through torchvision (another resampling filter), so compare to the PIL ones.
RefVilt = getattr(transformers, "ViltImageProcessorPil", transformers.ViltImageProcessor)
RefViT = getattr(transformers, "ViTImageProcessorPil", transformers.ViTImageProcessor)

TOL = 1e-2
SIZES = {"small": (40, 30), "vga": (640, 480), "portrait": (300, 500), "wide": (1200, 150)}


def picture(width: int, height: int, seed: int = 0) -> Image.Image:
    """A photo-like RGB image: gradients, shapes and noise (seeded)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], -1)
    base = base * rng.uniform(0.4, 1.0, 3) + rng.normal(0, 12, base.shape)
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        box = [x0, y0, x0 + int(rng.integers(5, width // 2 + 6)), y0 + int(rng.integers(5, 40))]
        draw.ellipse(box, fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    return image


def in_mode(image: Image.Image, mode: str, seed: int = 0) -> Image.Image:
    if mode == "RGBA":  # real transparency: a gradient alpha band
        alpha = Image.linear_gradient("L").resize(image.size)
        out = image.copy()
        out.putalpha(alpha)
        return out
    if mode == "P":
        return image.quantize(64, dither=Image.Dither.NONE)
    if mode == "I;16":  # 16-bit with the full range in use
        gray = np.asarray(image.convert("L")).astype(np.uint16) * 257
        return Image.fromarray(
            gray + np.random.default_rng(seed).integers(0, 200, gray.shape, dtype=np.uint16)
        )
    return image.convert(mode)


@pytest.fixture(scope="module")
def ref_vilt():
    return RefVilt()


@pytest.fixture(scope="module")
def ref_vit():
    return RefViT()


def assert_same(ours: dict, theirs: dict, mask: bool = True) -> None:
    a, b = ours["pixel_values"], theirs["pixel_values"]
    assert a.shape == b.shape and a.dtype == torch.float32
    assert (a - b).abs().max().item() <= TOL
    if mask:
        assert ours["pixel_mask"].dtype == torch.long
        assert torch.equal(ours["pixel_mask"], theirs["pixel_mask"])


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P"])
def test_vilt_matches_transformers_on_sizes_and_modes(tmp_path, ref_vilt, mode):
    files = []
    for i, (name, (w, h)) in enumerate(SIZES.items()):
        path = tmp_path / f"{name}.png"
        in_mode(picture(w, h, seed=i), mode).save(path)
        files.append(path)
    images = [Image.open(p) for p in files]
    assert {im.mode for im in images} == {mode}
    ours = ImageProcessor()(images)
    theirs = ref_vilt(images, return_tensors="pt", do_convert_rgb=True)
    assert_same(ours, theirs)
    assert ours["pixel_values"].shape == (4, 3, 608, 608)  # padded to the largest of the batch


@pytest.mark.parametrize("mode", ["LA", "CMYK", "1", "I", "F"])
def test_more_modes_follow_transformers_conversion(ref_vilt, mode):
    image = picture(160, 120).convert(mode)
    ours = ImageProcessor(size=64)(image)
    theirs = RefVilt(size={"shortest_edge": 64})(image, return_tensors="pt", do_convert_rgb=True)
    if mode == "F":  # PIL truncates floats to 8 bits, vilt rounds: a level apart before resizing
        assert (ours["pixel_values"] - theirs["pixel_values"]).abs().max() <= 2.01 / 127.5
    else:
        assert_same(ours, theirs)


def test_vilt_matches_transformers_on_jpeg_files(tmp_path, ref_vilt):
    paths = []
    for i, (name, (w, h)) in enumerate(SIZES.items()):
        paths.append(str(tmp_path / f"{name}.jpg"))
        picture(w, h, seed=i).save(paths[-1], quality=90)
    assert_same(ImageProcessor()(paths), ref_vilt(paths, return_tensors="pt"))


def test_sixteen_bit_is_scaled_not_clipped(tmp_path, ref_vilt):
    """transformers would clip 16-bit values at 255 (an all-white image); vilt divides by 257
    and otherwise matches transformers on the 8-bit image that gives."""
    path = tmp_path / "deep.png"
    deep = in_mode(picture(320, 240), "I;16")
    deep.save(path)
    assert Image.open(path).mode.startswith("I;16")
    eight = Image.fromarray(np.rint(np.asarray(deep) / 257).astype(np.uint8))
    ours = ImageProcessor()(str(path))
    assert_same(ours, ref_vilt(eight, return_tensors="pt", do_convert_rgb=True))
    assert ours["pixel_values"].std() > 0.2  # the picture survives


def test_arrays_and_tensors(ref_vilt):
    rgb = np.asarray(picture(200, 120))
    ours = ImageProcessor()
    theirs = ref_vilt(Image.fromarray(rgb), return_tensors="pt")
    assert_same(ours(rgb), theirs)  # (H, W, C) uint8
    assert_same(ours(np.moveaxis(rgb, -1, 0).copy()), theirs)  # (C, H, W)
    assert_same(ours(torch.from_numpy(rgb.copy())), theirs)
    assert_same(ours(rgb.astype(np.float32) / 255), theirs)  # floats in [0, 1]
    gray = rgb[..., 0]
    assert_same(
        ours(gray), ref_vilt(Image.fromarray(gray), return_tensors="pt", do_convert_rgb=True)
    )
    with pytest.raises(ImageInputError, match="values span"):
        ours(rgb.astype(np.float32) * 3 - 1)


def test_resize_arithmetic_and_thin_images():
    proc = ImageProcessor()
    assert proc.output_size(640, 480) == (512, 384)
    assert proc.output_size(480, 640) == (384, 512)
    assert proc.output_size(1200, 150) == (608, 64)  # longer side capped at int(1333/800*384)
    assert proc.output_size(2000, 10) == (608, 32)  # would floor to 0: keeps one divisor
    small = ImageProcessor(size=64, size_divisor=8)
    assert small.output_size(640, 480) == (80, 64)


def test_batches_nested_lists_and_return_numpy():
    proc = ImageProcessor(size=64)
    images = [[picture(64, 48, 1), picture(48, 64, 2)], [picture(80, 40, 3), picture(50, 50, 4)]]
    out = proc(images)
    assert out["pixel_values"].shape[:2] == (2, 2) and out["pixel_mask"].shape[:2] == (2, 2)
    flat = proc([im for pair in images for im in pair])
    assert torch.equal(out["pixel_values"].flatten(0, 1), flat["pixel_values"])
    arrays = proc(picture(64, 48), return_tensors="np")
    assert isinstance(arrays["pixel_values"], np.ndarray)
    with pytest.raises(ValueError, match="same, non-zero length"):
        proc([[picture(8, 8)], []])


def test_worker_path_equals_batch_call():
    """preprocess_one in workers + pad in the collator == one __call__ (float or uint8)."""
    proc = ImageProcessor(size=64)
    images = [picture(90, 60, 1), picture(60, 90, 2), picture(64, 64, 3)]
    batch = proc(images)
    floats = proc.pad([proc.preprocess_one(im) for im in images])
    uint8 = [proc.preprocess_one(im, normalize=False) for im in images]
    assert uint8[0].dtype == torch.uint8 and uint8[0].is_contiguous()
    for other in (floats, proc.pad(uint8)):
        assert torch.allclose(other["pixel_values"], batch["pixel_values"], atol=1e-6)
        assert torch.equal(other["pixel_mask"], batch["pixel_mask"])
    # padding is zero after normalisation, as transformers pads
    assert batch["pixel_values"][0][:, 64:, :].abs().sum() == 0


def test_threads_do_not_change_the_output(tmp_path):
    paths = []
    for i in range(5):
        paths.append(tmp_path / f"{i}.jpg")
        picture(120 + 10 * i, 90, seed=i).save(paths[-1])
    one = ImageProcessor(size=64, num_threads=1)(paths)
    two = ImageProcessor(size=64, num_threads=2)(paths)
    assert torch.equal(one["pixel_values"], two["pixel_values"])


def test_exif_orientation_is_applied(tmp_path, ref_vilt):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: turn 90 degrees clockwise to view
    picture(160, 100).save(path, exif=exif)
    ours = ImageProcessor(size=64)(str(path))
    assert ours["pixel_values"].shape[-2:] == (96, 64)  # upright: taller than wide
    assert_same(ImageProcessor()(str(path)), ref_vilt(str(path), return_tensors="pt"))


def test_jpeg_draft_is_close_and_off_by_default(tmp_path):
    path = tmp_path / "big.jpg"
    picture(2048, 1536).save(path, quality=92)
    exact = ImageProcessor(size=128)(str(path))["pixel_values"]
    drafted = ImageProcessor(size=128, jpeg_draft=True)(str(path))["pixel_values"]
    assert ImageProcessor().jpeg_draft is False
    assert drafted.shape == exact.shape
    assert 0 < (drafted - exact).abs().mean().item() < 0.02


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])
def test_vit_matches_transformers(ref_vit, mode):
    images = [in_mode(picture(w, h, i), mode) for i, (w, h) in enumerate(SIZES.values())]
    ours = ViTImageProcessor()(images)
    assert set(ours) == {"pixel_values"} and ours["pixel_values"].shape == (4, 3, 224, 224)
    assert_same(ours, ref_vit(images, return_tensors="pt", do_convert_rgb=True), mask=False)


def test_vit_custom_size_and_statistics():
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    ref = RefViT(size={"height": 32, "width": 48}, image_mean=mean, image_std=std)
    ours = ViTImageProcessor(size=(32, 48), image_mean=mean, image_std=std)
    images = [picture(100, 80), picture(30, 90, 1)]
    assert_same(ours(images), ref(images, return_tensors="pt"), mask=False)
    assert ours.pad([ours.preprocess_one(im, normalize=False) for im in images]).keys() == {
        "pixel_values"
    }


# ---- errors name the file ------------------------------------------------------------------


def test_missing_empty_corrupt_and_truncated_files(tmp_path):
    proc = ImageProcessor(size=32)
    missing = tmp_path / "nope.jpg"
    with pytest.raises(ImageInputError, match=r"nope\.jpg: image file not found"):
        proc([str(missing)])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageInputError, match=r"empty\.png: image file is empty"):
        proc(empty)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(np.random.default_rng(0).bytes(2000))
    with pytest.raises(ImageInputError, match=r"corrupt\.jpg: not an image"):
        proc(corrupt)
    whole = tmp_path / "whole.jpg"
    picture(200, 150).save(whole)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(ImageInputError, match=r"cut\.jpg: image file is truncated"):
        proc([whole, cut])
    with pytest.raises(ImageInputError, match="is a directory"):
        proc(tmp_path)


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "huge.png"
    picture(300, 200).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40000)  # PIL itself only warns below 2x
    with pytest.raises(ImageInputError, match=r"huge\.png: image is 300x200 = 60000 pixels"):
        ImageProcessor()(str(path))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageInputError, match=r"huge\.png: .*decompression bomb"):
        ImageProcessor()(str(path))


def test_bad_arrays_name_the_batch_item():
    proc = ImageProcessor(size=32)
    with pytest.raises(ImageInputError, match=r"image 1 of the batch.*zero size"):
        proc([picture(10, 10), np.zeros((0, 5, 3), np.uint8)])
    with pytest.raises(ImageInputError, match="shape"):
        proc(np.zeros((4, 5, 6, 7), np.uint8))
    with pytest.raises(TypeError, match="cannot read an image from dict"):
        proc({"x": 1})
    with pytest.raises(ValueError, match="empty list"):
        proc([])


# ---- files and configs ---------------------------------------------------------------------


def test_save_and_load_round_trip_and_transformers_reads_it(tmp_path, ref_vilt):
    proc = ImageProcessor(
        size=256, size_divisor=16, image_mean=(0.4, 0.5, 0.6), resample="bilinear"
    )
    proc.save_pretrained(tmp_path)
    assert ImageProcessor.from_pretrained(tmp_path) == proc
    assert ImageProcessor.from_pretrained(tmp_path / "preprocessor_config.json") == proc
    theirs = RefVilt.from_pretrained(tmp_path)
    image = picture(300, 200)
    assert_same(proc(image), theirs(image, return_tensors="pt"))
    assert ImageProcessor.from_pretrained(tmp_path, num_threads=1).num_threads == 1


def test_reads_transformers_layouts(tmp_path):
    new = tmp_path / "new"
    RefVilt(size={"shortest_edge": 288}).save_pretrained(new)
    assert ImageProcessor.from_pretrained(new).size == 288
    combined = tmp_path / "combined"
    combined.mkdir()
    inner = {"image_processor_type": "ViltImageProcessor", "size": {"shortest_edge": 320}}
    (combined / "processor_config.json").write_text(json.dumps({"image_processor": inner}))
    assert ImageProcessor.from_pretrained(combined).size == 320
    legacy = tmp_path / "legacy"  # as the dandelin checkpoints ship it
    legacy.mkdir()
    old = {
        "feature_extractor_type": "ViltFeatureExtractor",
        "size": 384,
        "size_divisor": 32,
        "resample": 3,
        "do_normalize": True,
        "image_mean": [0.5] * 3,
        "image_std": [0.5] * 3,
    }
    (legacy / "preprocessor_config.json").write_text(json.dumps(old))
    assert ImageProcessor.from_pretrained(legacy) == ImageProcessor()
    vit = tmp_path / "vit"
    RefViT(size={"height": 32, "width": 48}).save_pretrained(vit)
    assert ViTImageProcessor.from_pretrained(vit).size == (32, 48)
    with pytest.raises(ValueError, match="ViTImageProcessor"):
        ImageProcessor.from_pretrained(vit)
    with pytest.raises(FileNotFoundError, match="no preprocessor_config.json"):
        ImageProcessor.from_pretrained(tmp_path)


def test_from_config():
    small = ImageProcessor.from_config(ViltConfig.from_preset("vilt-small"))
    assert (small.size, small.size_divisor) == (64, 8)
    base = ImageProcessor.from_config(ViltConfig())
    assert base == ImageProcessor()
    vit = ViTImageProcessor.from_config(ViTConfig.from_preset("vit-micro"))
    assert vit.size == (32, 32)
