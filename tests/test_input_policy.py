"""One input policy on every path: an image the processor refuses (NaN, values out of range,
an odd dtype) is refused with the same message by the data sets' load_image and by
answer_question and attention_map, never turned black or stretched; tensors of every float
dtype are read alike."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_checkpoints import save_vilt

import vilt
from vilt.data import DataError, ImageError, load_image
from vilt.processing import ImageInputError

BAD_IMAGES = {
    "nan": (np.full((8, 8, 3), np.nan, np.float32), "holds NaN or infinite values"),
    "inf": (np.full((8, 8, 3), np.inf), "holds NaN or infinite values"),
    "over": (np.full((8, 8, 3), 300.5), r"values span \[300.5, 300.5\]"),
    "negative": (np.full((8, 8), -1.0), r"values span \[-1, -1\]"),
    "object": (np.ones((8, 8), dtype=object), "dtype object; expected bool, integers"),
    "complex": (np.ones((8, 8, 3), dtype=complex), "dtype complex128"),
    "strings": (np.full((8, 8), "a"), "dtype <U1"),
}


def message_after_name(err: Exception) -> str:
    return str(err).split(": ", 1)[1]


@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_the_data_path_refuses_what_the_processor_refuses_with_the_same_text(case):
    image, message = BAD_IMAGES[case]
    with pytest.raises(ImageInputError, match=message) as by_processor:
        vilt.ImageProcessor(size=32)([image])
    with pytest.raises(ImageError, match=message) as by_data:
        load_image(image, source="row 7 of my-data")
    assert isinstance(by_data.value, DataError) and isinstance(by_data.value, ImageInputError)
    assert str(by_data.value).startswith("row 7 of my-data: ")
    assert message_after_name(by_data.value) == message_after_name(by_processor.value)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64, torch.float32])
def test_float_tensors_of_every_dtype_are_read_alike(dtype):
    base = torch.linspace(0, 1, 3 * 8 * 8).reshape(3, 8, 8)
    tensor = base.to(dtype)
    expected = np.asarray(load_image(tensor.float()))
    assert np.array_equal(np.asarray(load_image(tensor)), expected)
    processor = vilt.ImageProcessor(size=32)
    assert torch.equal(
        processor([tensor])["pixel_values"], processor([tensor.float()])["pixel_values"]
    )


@pytest.fixture(scope="module")
def vqa_checkpoint(tmp_path_factory):
    return save_vilt(tmp_path_factory.mktemp("vqa"), vilt.ViltForQuestionAnswering,
                     id2label={0: "red", 1: "blue"})  # fmt: skip


def test_answer_question_and_attention_map_follow_the_policy(vqa_checkpoint, tmp_path):
    image, message = BAD_IMAGES["nan"]
    with pytest.raises(ImageInputError, match=message):
        vilt.answer_question(vqa_checkpoint, image, "what color?")
    with pytest.raises(ImageInputError, match=message):
        vilt.attention_map(vqa_checkpoint, image, tmp_path / "map.png", text="what color?")
    bf16 = torch.rand(3, 32, 32).to(torch.bfloat16)
    assert len(vilt.answer_question(vqa_checkpoint, bf16, "what color?", top_k=2)) == 2


@pytest.mark.parametrize("question", ["", "   ", "\t\n"])
def test_an_empty_question_is_refused_before_the_model_runs(vqa_checkpoint, question):
    with pytest.raises(ValueError, match="the question is empty"):
        vilt.answer_question(vqa_checkpoint, np.zeros((32, 32, 3), np.uint8), question)


def test_a_test_time_shift_as_large_as_the_image_is_refused(vqa_checkpoint):
    from vilt.processing.views import shift_image

    image = torch.arange(16.0).view(1, 4, 4)
    assert torch.equal(shift_image(image, 3, -3)[0, 3, 0], image[0, 0, 3])  # the largest fit
    for dy, dx in ((4, 0), (0, -4), (9, 9)):
        with pytest.raises(ValueError, match=r"does not fit an image of 4x4"):
            shift_image(image, dy, dx)
    with pytest.raises(ValueError, match=r"a shift of \(-32, 0\) pixels does not fit"):
        vilt.answer_question(
            vqa_checkpoint, np.zeros((32, 32, 3), np.uint8), "what color?", tta_shift=32
        )
