"""The judge's batched forward passes (``Judge.choice_probs_batch``, ``grade_many``, ``compare_many``) give the
probabilities of its one-item, unpadded path within float rounding — mixed lengths, prompts cut to the context,
multi-token choices read from one row — and are what ``judge_scores`` / ``pairwise_scores`` use."""

import numpy as np
import pytest

from llm4academic import scoring
from llm4academic.scoring import judge as J
from llm4academic.zbench import answers_long, load_zbench

ATOL = 1e-6

ITEMS = [  # (question, answer, reference): short, long, one cut to the 512 positions, one without reference
    ("1+1等于几？", "等于2。", "2"),
    ("介绍一下长城。", "长城是中国古代的军事防御工程，" * 6, "长城很长。"),
    ("介绍一下长城。", "长城很长。" * 400, ""),
    ("What is the capital of France?", "Paris.", "Paris"),
    ("请写一首诗。", "床前明月光，疑是地上霜。", ""),
]


@pytest.fixture(scope="module", params=["llama", "opt"])
def judge(request, tiny_models):
    return scoring.Judge(tiny_models(request.param), device="cpu", batch_size=2)


def test_batched_grades_equal_one_at_a_time(judge):
    batched = judge.grade_many(ITEMS)
    alone = [judge.grade(*item) for item in ITEMS]
    for b, a in zip(batched, alone, strict=True):
        assert np.allclose(b.probs, a.probs, atol=ATOL, rtol=0) and b.greedy == a.greedy
        assert b.expected == pytest.approx(a.expected, abs=1e-5)
    assert judge.grade_many([]) == []


def test_multi_token_choices_are_read_from_one_row(judge, monkeypatch):
    """``是`` and ``是的`` share a first token: the distribution after the prompt and after ``是`` come from one row."""
    texts = [judge.render(*scoring.grading_prompt(q, a, r, language="zh")) for q, a, r in ITEMS]
    choices = ("是", "是的", "不")
    assert any(len(s) > 1 for s in judge._plan(texts[0], choices)[1])
    calls = []
    forward = judge._forward
    monkeypatch.setattr(judge, "_forward", lambda rows: calls.append(len(rows)) or forward(rows))
    batched = judge.choice_probs_batch(texts, choices)
    assert sum(calls) == len(texts)  # one row per text, batches of near-equal length
    for b, text in zip(batched, texts, strict=True):
        assert np.allclose(b, judge.choice_probs(text, choices), atol=ATOL, rtol=0)


def test_batched_pairwise_equals_one_at_a_time(judge):
    asks = [(q, a, "等于3。") for q, a, _ in ITEMS] + [("1+1等于几？", "等于2。", "等于2。")]
    for b, a in zip(judge.compare_many(asks), [judge.compare(*x) for x in asks], strict=True):
        assert (b.outcome, b.first, b.second, b.consistent) == (a.outcome, a.first, a.second, a.consistent)
        assert b.score == pytest.approx(a.score, abs=1e-5)


class Unbatched:
    """The judge through its one-item methods only (no ``grade_many`` / ``compare_many``): the tables' old path."""

    def __init__(self, judge):
        self.name, self.language, self.grade, self.compare = judge.name, judge.language, judge.grade, judge.compare


def test_score_tables_use_the_batched_path(judge, monkeypatch):
    zb = load_zbench()
    answers = answers_long(zb[zb["item_id"].isin(["basic-001", "basic-009", "advanced-193"])], models=["GPT4", "moss"])
    graded_alone = scoring.judge_scores(answers, Unbatched(judge), zb, progress=False)
    pair_alone = scoring.pairwise_scores(answers, Unbatched(judge), baseline="GPT4", zbench=zb, progress=False)
    monkeypatch.setattr(judge, "grade", lambda *a: pytest.fail("one pass per item"))
    monkeypatch.setattr(judge, "compare", lambda *a: pytest.fail("one pass per item"))
    graded = scoring.judge_scores(answers, judge, zb, progress=False)
    pair = scoring.pairwise_scores(answers, judge, baseline="GPT4", zbench=zb, progress=False)
    assert np.allclose(graded["judge_expected"], graded_alone["judge_expected"], atol=1e-5, rtol=0)
    assert graded.drop(columns=["score", "judge_expected"]).equals(
        graded_alone.drop(columns=["score", "judge_expected"])
    )
    assert len(pair) == 3 and pair.drop(columns=["score"]).equals(pair_alone.drop(columns=["score"]))
    assert np.allclose(pair["score"], pair_alone["score"], atol=1e-5, rtol=0)


def test_batches_pad_little_within_the_budget():
    assert J._batches([], 4, 128) == []
    assert J._batches([50, 50, 50], 8, 128) == [[0, 1, 2]]
    assert J._batches([400, 100, 98, 97], 8, 128) == [[0], [1, 2, 3]]
    lengths = [100] * 10
    assert [len(b) for b in J._batches(lengths, 4, 128)] == [4, 4, 2]  # rows × longest ≤ 4 × the longest row
    flat = [i for b in J._batches([300, 5, 200, 7, 100], 2, 0) for i in b]
    assert flat == [0, 2, 4, 3, 1]  # longest first


def test_bad_batch_size(tiny_models):
    with pytest.raises(scoring.ScoringError, match="batch_size"):
        scoring.Judge(tiny_models("llama"), device="cpu", batch_size=0)
