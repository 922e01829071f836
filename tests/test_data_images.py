"""Image decoding: every bad file gives an ImageError naming it; every mode becomes RGB."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from vilt.data import ImageError, SkipCounter, load_image
from vilt.data.errors import DataError, read_json


def _rgb(h=12, w=16, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _png_bytes(image, fmt="PNG"):
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


def test_reads_paths_bytes_dicts_arrays_and_pil(tmp_path):
    im = _rgb()
    path = tmp_path / "a.png"
    im.save(path)
    data = path.read_bytes()
    for given in (
        path,
        str(path),
        data,
        {"bytes": data, "path": None},
        {"bytes": None, "path": str(path)},
        im,
    ):
        out = load_image(given)
        assert out.mode == "RGB" and out.size == (16, 12)
        assert np.array_equal(np.asarray(out), np.asarray(im))
    assert load_image(np.asarray(im)).size == (16, 12)
    assert load_image(np.zeros((3, 5, 7), np.uint8)).size == (7, 5)  # channels first


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("missing.png", None, "missing_image"),
        ("empty.png", b"", "empty_image"),
        ("corrupt.png", b"this is not an image" * 5, "corrupt_image"),
        ("truncated.png", "half-png", "truncated_image"),
        ("truncated.jpg", "half-jpg", "truncated_image"),
    ],
)
def test_bad_files_name_file_and_record(tmp_path, name, content, reason):
    path = tmp_path / name
    if content == "half-png":
        data = _png_bytes(_rgb(64, 64))
        path.write_bytes(data[: len(data) // 2])
    elif content == "half-jpg":
        data = _png_bytes(_rgb(64, 64), "JPEG")
        path.write_bytes(data[: len(data) // 2])
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageError) as info:
        load_image(path, source="question 7")
    assert info.value.reason == reason
    assert str(path) in str(info.value) and "question 7" in str(info.value)
    assert isinstance(info.value, DataError)


def test_decompression_bomb_is_an_image_error(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    _rgb(40, 50).save(path)
    with pytest.raises(ImageError, match="2000 pixels") as info:
        load_image(path, max_pixels=1000)
    assert info.value.reason == "too_large_image" and str(path) in str(info.value)
    # PIL's own limit (its warning and its error) becomes the same error
    for limit in (1500, 900):
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
        with pytest.raises(ImageError) as info:
            load_image(path)
        assert info.value.reason == "too_large_image"


def test_zero_size_array():
    with pytest.raises(ImageError) as info:
        load_image(np.zeros((0, 5), np.uint8), source="row 3")
    assert info.value.reason == "empty_image" and "row 3" in str(info.value)


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "PA", "1", "CMYK", "I", "F"])
def test_modes_become_rgb(mode):
    base = _rgb()
    im = base.convert(mode) if mode != "PA" else base.convert("P").convert("PA")
    fmt = "TIFF" if mode in ("CMYK", "I", "F") else "PNG"
    out = load_image(im if mode == "PA" else _png_bytes(im, fmt))  # PNG cannot hold PA
    assert out.mode == "RGB" and out.size == base.size
    if mode in ("L", "I", "F"):  # gray values are kept, replicated to three channels
        a = np.asarray(out)
        assert np.array_equal(a[..., 0], np.asarray(base.convert("L")))
        assert np.array_equal(a[..., 0], a[..., 2])


def test_transparency_is_white_and_16_bit_is_scaled():
    rgba = Image.new("RGBA", (4, 4), (10, 20, 30, 0))
    assert np.asarray(load_image(rgba)).min() == 255
    sixteen = Image.fromarray(np.full((4, 4), 65535, np.uint16))
    out = np.asarray(load_image(_png_bytes(sixteen)))
    assert out.min() == 255  # 16-bit white stays white, not clipped garbage
    half = np.asarray(load_image(np.full((2, 2), 0.5)))
    assert half.min() == half.max() == 128  # floats in [0, 1] scale by 255


def test_skip_counter_summary_and_worker_rows():
    skips = SkipCounter()
    assert skips.summary() == "skipped 0 records"
    skips.add("missing_image", "a.png")
    skips.add("missing_image", "b.png")
    skips.add("corrupt_image", "c.png")
    assert skips.counts() == {"missing_image": 2, "corrupt_image": 1}
    assert skips.total == 3
    assert skips.summary() == "skipped 3 records: 2 missing image file, 1 corrupt image"
    assert int(skips.as_tensor().sum()) == 3


def test_skip_counter_counts_inside_dataloader_workers():
    skips = SkipCounter()

    class Bad(torch.utils.data.Dataset):
        def __len__(self):
            return 6

        def __getitem__(self, i):
            skips.add("corrupt_image", f"item {i}")
            return i

    loader = torch.utils.data.DataLoader(Bad(), batch_size=2, num_workers=2)
    assert sorted(x for b in loader for x in b.tolist()) == list(range(6))
    assert skips.counts() == {"corrupt_image": 6}


def test_read_json_names_file_and_position(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"questions": [\n  {"a": 1},\n  oops\n]}')
    with pytest.raises(DataError, match=r"broken\.json: malformed JSON at line 3 column 3"):
        read_json(path)
