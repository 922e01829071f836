"""Tokenizer: the same ids as transformers' BertTokenizerFast for one vocab.txt; training a
WordPiece vocabulary offline; word ids for whole-word masking; files both libraries read."""

import json

import pytest
import torch

from vilt.processing import Tokenizer, train_tokenizer

transformers = pytest.importorskip("transformers")

VOCAB = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    "what", "color", "is", "the", "a", "cat", "dog", "how", "many", "are", "there",
    "red", "blue", "shape", "circle", "##s", "##es", "un", "##known", "caf", "##e",
    "?", ".", ",", "!", "中", "文", "'", "t", "isn",
]  # fmt: skip
TEXTS = [
    "What color is the cat?",
    "",
    "Café 中文: the [MASK] is RED!",
    "how many circles are there " * 12,  # longer than 40 tokens: truncated
    "  Unknown   words, isn't it?  ",
    "zebra",
]
KEYS = ("input_ids", "attention_mask", "token_type_ids")


@pytest.fixture(scope="module")
def vocab_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "options",
    [
        dict(padding=True, truncation=True, max_length=40),
        dict(padding="max_length", truncation=True, max_length=16),
        dict(padding=True, truncation=True, max_length=6),
    ],
)
def test_same_ids_as_bert_tokenizer_fast(vocab_file, options):
    ours = Tokenizer.from_vocab(vocab_file)
    theirs = transformers.BertTokenizerFast(str(vocab_file))
    a, b = ours(TEXTS, **options), theirs(TEXTS, return_tensors="pt", **options)
    for key in KEYS:
        assert a[key].dtype == torch.long
        assert torch.equal(a[key], b[key]), key
    for i in range(len(TEXTS)):
        assert a.word_ids(i) == b.word_ids(i)
    assert a["input_ids"].shape[1] <= options["max_length"]


def test_padding_goes_to_the_longest_text_only(vocab_file):
    tok = Tokenizer.from_vocab(vocab_file)
    out = tok(["what color", "is the cat red ?"])
    assert out["input_ids"].shape == (2, 7)  # [CLS] 5 tokens [SEP], not max_length
    assert out["input_ids"][0].tolist() == [2, 5, 6, 3, 0, 0, 0]
    assert out["attention_mask"][0].tolist() == [1, 1, 1, 1, 0, 0, 0]
    single = tok("what color")  # one string is a batch of one
    assert single["input_ids"].tolist() == [[2, 5, 6, 3]]
    lists = tok(["what", "what color"], padding=False, return_tensors=None)
    assert lists["input_ids"] == [[2, 5, 3], [2, 5, 6, 3]]
    with pytest.raises(ValueError, match="padding=True"):
        tok(["what", "what color"], padding=False)


def test_special_ids_word_ids_and_decode(vocab_file):
    tok = Tokenizer.from_vocab(vocab_file)
    assert (tok.pad_token_id, tok.unk_token_id, tok.cls_token_id) == (0, 1, 2)
    assert (tok.sep_token_id, tok.mask_token_id) == (3, 4)
    assert tok.all_special_ids == [0, 1, 2, 3, 4]
    assert tok.vocab_size == len(VOCAB) == len(tok)
    batch = tok(["the circles", "unknown cats"])
    # "circles" -> circle ##s share word 1; "unknown" -> un ##known share word 0
    assert tok.word_ids(0) == [None, 0, 1, 1, None, None]  # padded to the longer text
    assert batch.word_ids(1) == [None, 0, 0, 1, 1, None]
    assert tok.tokenize("unknown cats") == ["un", "##known", "cat", "##s"]
    assert tok.decode(batch["input_ids"][1]) == "unknown cats"
    assert tok.batch_decode(batch["input_ids"]) == ["the circles", "unknown cats"]
    assert tok.convert_ids_to_tokens([2, 10]) == ["[CLS]", "cat"]
    assert tok.convert_tokens_to_ids(["cat", "zebra"]) == [10, 1]


def test_cased_vocab_from_tokenizer_config(vocab_file, tmp_path):
    (tmp_path / "vocab.txt").write_text(vocab_file.read_text() + "Red\n", encoding="utf-8")
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps({"do_lower_case": False, "model_max_length": 40})
    )
    tok = Tokenizer.from_pretrained(tmp_path)
    assert tok.lowercase is False and tok.model_max_length == 40
    assert tok.tokenize("Red red") == ["Red", "red"]


def test_train_tokenizer_is_bert_style_and_deterministic():
    texts = ["what color is the circle?", "how many triangles are there", "is there a red shape"]
    tok = train_tokenizer(texts * 20, 80)
    again = train_tokenizer(texts * 20, vocab_size=80)
    assert tok.get_vocab() == again.get_vocab()
    vocab = tok.get_vocab()
    assert [vocab[t] for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")] == [0, 1, 2, 3, 4]
    assert 5 < tok.vocab_size <= 80
    out = tok(["What color is the CIRCLE?", "the [MASK] is red"])
    assert out["input_ids"][:, 0].tolist() == [2, 2]
    assert 4 in out["input_ids"][1].tolist()  # [MASK] in raw text stays one token
    assert tok.decode(out["input_ids"][0]) == "what color is the circle?"
    assert any(t.startswith("##") for t in vocab)  # subword pieces for unseen words
    chars_only = train_tokenizer(texts, 500, min_frequency=10**6).get_vocab()
    assert all(len(t.removeprefix("##")) == 1 for t in chars_only if not t.startswith("["))


def test_train_tokenizer_rejects_bad_input():
    with pytest.raises(TypeError, match="not one string"):
        train_tokenizer("just one string", 50)
    with pytest.raises(TypeError, match="text 1 is int"):
        train_tokenizer(["fine", 3], 50)
    with pytest.raises(ValueError, match="no texts"):
        train_tokenizer([], 50)
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(["a b"], 5)


def test_save_load_and_transformers_reads_it(tmp_path):
    tok = train_tokenizer(["a red circle", "two blue squares", "what shape is it"] * 5, 60)
    tok.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} >= {
        "tokenizer.json",
        "vocab.txt",
        "tokenizer_config.json",
    }
    texts = ["A red square?", "what is it", "zzz"]
    loaded = Tokenizer.from_pretrained(tmp_path)
    assert loaded.get_vocab() == tok.get_vocab()
    auto = transformers.AutoTokenizer.from_pretrained(tmp_path)
    from_vocab = Tokenizer.from_vocab(tmp_path / "vocab.txt")
    for other in (loaded(texts), auto(texts, padding=True, return_tensors="pt"), from_vocab(texts)):
        for key in KEYS:
            assert torch.equal(other[key], tok(texts)[key])
    assert torch.equal(
        tok.to_transformers()(texts, padding=True, return_tensors="pt")["input_ids"],
        tok(texts)["input_ids"],
    )


def test_wraps_a_transformers_tokenizer(vocab_file):
    theirs = transformers.BertTokenizerFast(str(vocab_file))
    ours = Tokenizer.from_transformers(theirs)
    assert ours.model_max_length == 40  # transformers' "no limit" is not taken literally
    assert torch.equal(
        ours(TEXTS)["input_ids"],
        theirs(TEXTS, padding=True, truncation=True, max_length=40, return_tensors="pt")[
            "input_ids"
        ],
    )


def test_errors(vocab_file, tmp_path):
    tok = Tokenizer.from_vocab(vocab_file)
    with pytest.raises(TypeError, match="text 1 of the batch is NoneType"):
        tok(["fine", None])
    with pytest.raises(FileNotFoundError, match="no tokenizer.json or vocab.txt"):
        Tokenizer.from_pretrained(tmp_path)
    bad = tmp_path / "vocab.txt"
    bad.write_text("hello\nworld\n")
    with pytest.raises(ValueError, match=r"vocab\.txt: the vocabulary lacks the special tokens"):
        Tokenizer.from_vocab(bad)
    from tokenizers import Tokenizer as RustTokenizer
    from tokenizers.models import WordPiece

    RustTokenizer(WordPiece({"[UNK]": 0, "a": 1}, unk_token="[UNK]")).save(
        str(tmp_path / "tokenizer.json")
    )
    with pytest.raises(ValueError, match=r"tokenizer\.json: the vocabulary has no pad_token"):
        Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"tokenizer\.json: not a tokenizers file"):
        Tokenizer.from_pretrained(tmp_path)
