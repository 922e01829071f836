"""Retrieval: ranking and recall@K on hand-made scores where the answer is known, re-ranking
of a first stage's top k, and the same ranking as exhaustive scoring on a real model."""

import pytest
import torch
from tiny_checkpoints import TEXTS, images, save_vilt

import vilt
from vilt.retrieval import chance_recall, rank_by_scores, rerank, retrieval_recall


class StubScorer:
    """Scores pairs from a fixed (texts, images) matrix and remembers what it was asked."""

    def __init__(self, itm):
        self.itm = torch.as_tensor(itm, dtype=torch.float32)
        self.asked = []

    def score_pairs(self, images, texts, pairs, batch_size=None):
        self.asked.extend(pairs)
        return torch.stack([self.itm[t, i] for i, t in pairs])


def test_rank_by_scores_is_descending_and_stable():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.9], [3.0, 2.0, 1.0, 0.0]])
    assert rank_by_scores(scores).tolist() == [[1, 3, 2, 0], [0, 1, 2, 3]]


def test_exhaustive_recall_arithmetic():
    # text t's image is t. Ranks of the right image: text0 1st, text1 2nd, text2 6th, text3 last.
    itm = torch.tensor(
        [
            [9, 1, 2, 3, 4, 5, 6],
            [5, 8, 9, 1, 2, 3, 4],
            [9, 8, 1, 7, 6, 5, 0],
            [9, 8, 7, 0, 6, 5, 4],
        ],
        dtype=torch.float32,
    )
    stub = StubScorer(itm)
    result = retrieval_recall(stub, [None] * 7, ["a", "b", "c", "d"], [0, 1, 2, 3], ks=(1, 2, 5, 6))
    assert result.text_ranks == [0, 1, 5, 6]
    assert result.text_to_image == {1: 25.0, 2: 50.0, 5: 50.0, 6: 75.0}
    # image -> text, by the columns: image 0 sees (9, 5, 9, 9): text0 first of the tied 9s;
    # image 1 (1, 8, 8, 8): text1 first of the 8s; image 2 (2, 9, 1, 7): text2 last; image 3
    # (3, 1, 7, 0): text3 last. Images 4-6 describe nothing and are no queries.
    assert result.image_ranks == [0, 0, 3, 3, None, None, None]
    assert result.image_to_text == {1: 50.0, 2: 50.0, 5: 100.0, 6: 100.0}
    assert result.pairs_scored == 28 and len(set(stub.asked)) == 28
    assert result.to_dict() == {
        **{f"t2i_R@{k}": v for k, v in result.text_to_image.items()},
        **{f"i2t_R@{k}": v for k, v in result.image_to_text.items()},
        "pairs_scored": 28,
    }
    assert "text->image R@1  25.0" in str(result)


def test_several_texts_per_image_count_the_best_for_image_to_text():
    # two images, four texts: texts 0, 1 describe image 0; texts 2, 3 image 1
    itm = torch.tensor([[0.0, 1.0], [2.0, 0.0], [3.0, 1.0], [0.0, 4.0]])
    result = retrieval_recall(StubScorer(itm), [None] * 2, list("abcd"), [0, 0, 1, 1], ks=(1,))
    assert result.text_ranks == [1, 0, 1, 0]
    # image 0 sees texts ordered 2, 1, 0, 3: its best text (1) is 2nd; image 1: 3 first
    assert result.image_ranks == [1, 0]
    assert result.image_to_text == {1: 50.0} and result.text_to_image == {1: 50.0}


def test_identical_captions_count_every_image_they_describe_and_the_top_lists():
    # images 0 and 2 show the same thing; texts 0 and 2 are the same caption of it
    itm = torch.tensor([[1.0, 0.0, 3.0], [0.0, 2.0, 1.0], [0.5, 0.0, 2.0]])
    relevant = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 0, 1]], dtype=torch.bool)
    strict = retrieval_recall(StubScorer(itm), [None] * 3, ["x", "y", "x"], [0, 1, 2], ks=(1, 2))
    dupes = retrieval_recall(StubScorer(itm), [None] * 3, ["x", "y", "x"], relevant=relevant,
                             ks=(1, 2))  # fmt: skip
    # text 0 ranks image 2 first: wrong by its own image, right as a duplicate
    assert strict.text_ranks == [1, 0, 0] and dupes.text_ranks == [0, 0, 0]
    assert dupes.text_to_image == {1: 100.0, 2: 100.0}
    # image 0 sees texts (1.0, 0.0, 0.5): its own text first either way; image 2 (3, 1, 2)
    assert strict.image_ranks == [0, 0, 1] and dupes.image_ranks == [0, 0, 0]
    assert dupes.text_top == [[2, 0], [1, 2], [2, 0]] and dupes.image_top[2] == [0, 2]
    with pytest.raises(ValueError, match="not both"):
        retrieval_recall(StubScorer(itm), [None] * 3, list("xyx"), [0, 1, 2], relevant=relevant)
    lost = relevant.clone()
    lost[1] = False
    with pytest.raises(ValueError, match=r"text\(s\) \[1\] have no relevant image"):
        retrieval_recall(StubScorer(itm), [None] * 3, list("xyx"), relevant=lost)
    with pytest.raises(ValueError, match=r"\(texts, images\) = \(3, 3\) matrix"):
        retrieval_recall(StubScorer(itm), [None] * 3, list("xyx"), relevant=relevant[:2])


def test_rerank_orders_candidates_by_score_and_the_rest_by_first_stage():
    first = torch.tensor([[0.9, 0.8, 0.7, 0.1, 0.6]])
    candidates = torch.tensor([[0, 1, 2]])
    scores = torch.tensor([[1.0, 5.0, 3.0]])
    assert rerank(first, candidates, scores).tolist() == [[1, 2, 0, 4, 3]]


def test_rerank_scores_only_the_top_k_and_cannot_recover_what_the_first_stage_missed():
    n = 5
    itm = torch.eye(n) * 10  # the ITM head is always right
    first = torch.zeros(n, n)
    first[0] = torch.tensor([0.0, 1, 2, 3, 4])  # text 0: its image is last in the first stage
    for t in range(1, n):
        first[t, t] = 1.0  # the others: first
    stub = StubScorer(itm)
    result = retrieval_recall(
        stub, [None] * n, list("abcde"), ks=(1, 5), rerank_top_k=2, first_stage=first
    )
    assert result.text_ranks == [4, 0, 0, 0, 0]  # below the 2 candidates, in first-stage order
    assert result.text_to_image == {1: 80.0, 5: 100.0}
    # image -> text candidates (first-stage columns, ties in index order): texts 0 and i for
    # image i >= 1, texts 0 and 1 for image 0. So every image finds its text first.
    assert result.image_ranks == [0] * n
    # scored: the union of text 0's (4, 0), (3, 0), text t's (t, t), (0, t), and each image's
    # (i, 0), (i, i), (0, 1): 13 distinct (image, text) pairs, each asked once
    asked = set(stub.asked)
    assert len(asked) == len(stub.asked) == result.pairs_scored == 13
    assert {(4, 0), (3, 0), (0, 0), (2, 2), (0, 2)} <= asked and (1, 2) not in asked
    scored = [
        retrieval_recall(
            StubScorer(itm), [None] * n, list("abcde"), rerank_top_k=k, first_stage=first
        ).pairs_scored
        for k in (1, 2, 3, 5)
    ]
    assert scored[:2] == [9, 13] and scored[1] < scored[2] < scored[3] == n * n


@pytest.fixture(scope="module")
def embedder(tmp_path_factory):
    return vilt.Embedder.from_pretrained(save_vilt(tmp_path_factory.mktemp("itm")), device="cpu")


def test_rerank_with_k_at_least_n_equals_exhaustive_on_a_real_model(embedder):
    pictures, texts = images(), TEXTS
    owners = [0, 1, 2, 3, 4, 5]
    full = retrieval_recall(embedder, pictures, texts, owners)
    assert full.pairs_scored == 36
    for k in (6, 10):
        again = retrieval_recall(embedder, pictures, texts, owners, rerank_top_k=k)
        assert again.text_ranks == full.text_ranks and again.image_ranks == full.image_ranks
        assert again.to_dict() == full.to_dict()
    # the default first stage (the model's image-only and text-only states) prunes pairs
    scored = [
        retrieval_recall(embedder, pictures, texts, rerank_top_k=k).pairs_scored for k in (1, 2, 4)
    ]
    assert scored[0] < scored[1] < scored[2] < 36
    assert scored[0] <= 12  # at most k x (N + M)


def test_exhaustive_ranks_follow_the_itm_scores(embedder):
    pictures, texts = images(4), TEXTS[:4]
    result = retrieval_recall(embedder, pictures, texts)
    itm = torch.stack([embedder.scores(pictures, [t] * 4) for t in texts])  # (texts, images)
    expected = [int((itm[t] > itm[t, t]).sum()) for t in range(4)]
    assert result.text_ranks == expected


def test_bad_inputs_are_named(embedder):
    stub = StubScorer(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="pass text_to_image"):
        retrieval_recall(stub, [None] * 3, ["a", "b"])
    with pytest.raises(ValueError, match="text_to_image has 1 entries for 2 texts"):
        retrieval_recall(stub, [None] * 2, ["a", "b"], [0])
    with pytest.raises(ValueError, match=r"text\(s\) \[1\] points outside the 2 images"):
        retrieval_recall(stub, [None] * 2, ["a", "b"], [0, 2])
    with pytest.raises(TypeError, match="not one string"):
        retrieval_recall(stub, [None] * 2, "ab")
    with pytest.raises(TypeError, match="not a single image"):
        retrieval_recall(stub, "image.png", ["a", "b"], [0, 0])
    with pytest.raises(ValueError, match="needs images and texts"):
        retrieval_recall(stub, [], [])
    with pytest.raises(ValueError, match="ks must be positive"):
        retrieval_recall(stub, [None] * 2, ["a", "b"], ks=(0, 1))
    with pytest.raises(ValueError, match="rerank_top_k must be >= 1"):
        retrieval_recall(stub, [None] * 2, ["a", "b"], rerank_top_k=0)
    with pytest.raises(ValueError, match=r"shape \(texts, images\) = \(2, 2\)"):
        retrieval_recall(stub, [None] * 2, ["a", "b"], rerank_top_k=1, first_stage=torch.zeros(3))
    with pytest.raises(ValueError, match="only used with rerank_top_k"):
        retrieval_recall(stub, [None] * 2, ["a", "b"], first_stage=torch.zeros(2, 2))
    with pytest.raises(TypeError, match="needs an Embedder"):
        retrieval_recall(embedder.model, [None] * 2, ["a", "b"])
    vqa = vilt.Embedder(vilt.ViltForQuestionAnswering(embedder.model.config), embedder.processor)
    with pytest.raises(TypeError, match="no image-text matching head"):
        retrieval_recall(vqa, images(2), TEXTS[:2])


def test_chance_recall_is_what_a_random_order_scores():
    # one right image among 4: found in the top K with probability K / 4
    chance = chance_recall(torch.eye(4, dtype=torch.bool), ks=(1, 2, 10))
    assert chance.text_to_image == pytest.approx({1: 25.0, 2: 50.0, 10: 100.0})
    assert chance.image_to_text == pytest.approx({1: 25.0, 2: 50.0, 10: 100.0})
    # two right among 4: 1 - C(2, 2) / C(4, 2) = 5/6 in the top 2
    two = torch.tensor([[1, 1, 0, 0]], dtype=torch.bool)
    assert chance_recall(two, ks=(1, 2)).text_to_image == pytest.approx({1: 50.0, 2: 250 / 3})
    # against random scores ranked by retrieval_recall itself (images 3 is no text's)
    relevant = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0]], dtype=torch.bool)
    generator = torch.Generator().manual_seed(0)
    runs = [
        retrieval_recall(StubScorer(torch.rand(3, 4, generator=generator)), [None] * 4,
                         ["a", "b", "c"], ks=(1, 2), relevant=relevant)
        for _ in range(600)
    ]  # fmt: skip
    expected = chance_recall(relevant, ks=(1, 2))
    for k in (1, 2):
        t2i = sum(r.text_to_image[k] for r in runs) / len(runs)
        i2t = sum(r.image_to_text[k] for r in runs) / len(runs)
        assert t2i == pytest.approx(expected.text_to_image[k], abs=3.0)
        assert i2t == pytest.approx(expected.image_to_text[k], abs=3.0)
    with pytest.raises(ValueError, match="a right image per text"):
        chance_recall(torch.tensor([[1, 0], [0, 0]], dtype=torch.bool))
