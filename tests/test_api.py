"""The public API: every name in vilt.__all__ exists, the names DESIGN.md promises are there,
and ``import vilt`` alone is enough to load transformers checkpoints."""

import inspect
import subprocess
import sys

from tiny_checkpoints import save_vilt

import vilt

# The names that DESIGN.md lists for users (and that tests outside the repository call).
DESIGN_NAMES = {
    "ViTConfig",
    "ViltConfig",
    "ViTModel",
    "ViTForImageClassification",
    "ViltModel",
    "ViltForQuestionAnswering",
    "ViltForImageTextMatching",
    "ViltForMaskedLM",
    "ViltForPreTraining",
    "ViltProcessor",
    "ImageProcessor",
    "ViTImageProcessor",
    "train_tokenizer",
    "embed",
    "Embedder",
    "retrieval_recall",
    "RetrievalResult",
}


def test_every_public_name_exists_and_design_names_are_public():
    assert len(vilt.__all__) == len(set(vilt.__all__))
    missing = [name for name in vilt.__all__ if not hasattr(vilt, name)]
    assert not missing
    assert set(vilt.__all__) >= DESIGN_NAMES
    namespace: dict = {}
    exec("from vilt import *", namespace)
    assert set(namespace) >= DESIGN_NAMES


def test_embed_is_the_function_with_the_documented_signature():
    assert inspect.isfunction(vilt.embed)
    params = inspect.signature(vilt.embed).parameters
    assert list(params)[:5] == ["images", "texts", "model", "batch_size", "device"]
    assert params["batch_size"].default == 32 and params["device"].default is None
    assert inspect.isclass(vilt.Embedder) and callable(vilt.Embedder.from_pretrained)


def test_import_vilt_alone_reads_transformers_checkpoints(tmp_path):
    source = save_vilt(tmp_path / "vilt", vilt.ViltForQuestionAnswering, num_labels=3)
    vilt.convert(source, tmp_path / "hf", to="transformers")
    # a fresh interpreter: nothing but `import vilt` may register the transformers reader
    code = f"import vilt; print(type(vilt.load_model({str(tmp_path / 'hf')!r})).__name__)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ViltForQuestionAnswering"
