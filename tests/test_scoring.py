"""Scoring: reference scorers on real Z-Bench answer/reference pairs, ROUGE-L, aggregation, leaderboard, judge."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from llm4academic import scoring
from llm4academic.config import KitError
from llm4academic.scoring import board as scoring_board
from llm4academic.scoring.rouge import _lcs_length
from llm4academic.zbench import REFERENCE_MODELS, answers_long, load_zbench


@pytest.fixture(scope="module")
def zb():
    return load_zbench()


@pytest.fixture(scope="module")
def item(zb):
    by_id = zb.set_index("item_id")
    return lambda item_id: by_id.loc[item_id]


def real(item, item_id, model):
    row = item(item_id)
    return row[model], row["reference"], row["prompt"]


# --------------------------------------------------------------------------------------------- option letters
@pytest.mark.parametrize(
    "item_id, model, letter, rule",
    [
        ("advanced-007", "GPT4", "E", "first-sentence"),  # 选项（E）…: full-width brackets
        ("advanced-007", "新版智谱", None, "several"),  # 答案：D,E。 names two letters
        ("advanced-007", "面壁", None, "restated"),  # copies options A–D, chooses none
        ("advanced-007", "moss", "A", "lead"),  # the bare letter
        ("advanced-155", "GPT3.5", "B", "cue"),  # 答案是(B) 仅II; reference is lower-case b
        ("advanced-155", "面壁", None, "restated"),  # 答案： (A) 仅I (B) 仅II … is a copy, not a choice
        ("advanced-155", "通义千问", None, "negated"),  # 选项 (D) II和III 不正确。
        ("advanced-155", "智谱", "D", "text"),  # "II 和 III 必须是真的": option D by its text
        ("advanced-100", "GPT3.5", "D", "first-sentence"),  # then discusses (A), (B), (C), (E)
        ("domain-006", "商量", "D", "cue"),  # 正确答案是(D) …, later lists (A) (B) (C)
        ("domain-000", "商量", "C", "first-sentence"),  # asks for the false statement: 选项 C 是不正确的
        ("domain-038", "智谱", "B", "cue"),  # 答案选择B) 15
        ("domain-034", "通义千问", "C", "text"),  # 一位年长的亚裔美国妇女 … (distinctive part: 亚裔)
        ("domain-030", "minimax", "B", "number"),  # numeric options: …概率是1/7 = (B)1/7
        ("advanced-089", "智谱", None, "several"),  # calls (A) wrong, (D) and (E) right
        ("domain-012", "面壁", None, "none"),  # a refusal
    ],
)
def test_option_on_real_answers(item, item_id, model, letter, rule):
    answer, reference, prompt = real(item, item_id, model)
    assert scoring.option_letter(reference) is not None
    assert scoring.explain_option(answer, prompt) == (letter, rule)
    assert scoring.SCORERS["option"].score(answer, reference, prompt) == float(letter == reference.upper())


@pytest.mark.parametrize(
    "answer, letter",
    [
        ("选C", "C"),
        ("答案是 (B)", "B"),
        ("The answer is d.", "D"),
        ("正确答案：A", "A"),
        ("B。", "B"),
        ("答案是Ｂ。", "B"),
        ("（Ｄ）镧系元素…", "D"),
        ("故选项为C。", "C"),
        ("选项B是正确的", "B"),
        ("(c)", "C"),
        ("答案是 DNA 的复制", None),
        ("The answer is a bit unclear", None),
        ("故正确答案为 BD", None),
        ("", None),
    ],
)
def test_option_statements(answer, letter):
    assert scoring.extract_option(answer) == letter


def test_option_references_and_options(zb):
    letters = zb[zb["reference"].map(lambda r: scoring.option_letter(r) is not None)]
    assert len(letters) == 38 and set(letters["reference"].str.upper()) <= set("ABCDE")
    assert [scoring.option_letter(r) for r in ("d", "E", "(B)", " B ", "（ｂ）", "BD", "True", "1")] == [
        "D",
        "E",
        "B",
        "B",
        "B",
        None,
        None,
        None,
    ]
    assert scoring.parse_options("…？(A) 4 (B) 3 (C) 2 (D) 1") == {"A": "4", "B": "3", "C": "2", "D": "1"}


def test_option_ranks_gpt4_first_on_real_answers(zb):
    items = zb[zb["reference"].map(lambda r: scoring.option_letter(r) is not None)]
    right = {
        m: sum(scoring.SCORERS["option"].score(r[m], r["reference"], r["prompt"]) for _, r in items.iterrows())
        for m in REFERENCE_MODELS
    }
    assert max(right, key=right.get) == "GPT4" and right["GPT4"] >= 20 and right["面壁"] <= 5


# --------------------------------------------------------------------------------------------- numbers
def test_reference_numbers(zb):
    read = {
        r: [n.value for n in ns] if (ns := scoring.reference_numbers(r)) else None
        for r in (
            "80%",
            "7.22 m/s/s",
            "-2kg",
            "2/7",
            "pi^2/6",
            "(40*70)/(20*60)",
            "29 或 27",
            "80779853376",
            "01/05/2021",
            "(9,9)",
            "3457,3876,9823",
            "1引起了2",
            "2.科尔大学篮球队的每个球员身高都在 6 英尺以上。",
        )
    }
    assert read["80%"] == [0.8] and read["7.22 m/s/s"] == [7.22] and read["-2kg"] == [-2.0]
    assert read["2/7"] == pytest.approx([2 / 7]) and read["pi^2/6"] == pytest.approx([math.pi**2 / 6])
    assert read["(40*70)/(20*60)"] == pytest.approx([7 / 3]) and read["29 或 27"] == [29, 27]
    assert read["80779853376"] == [80779853376]
    assert all(
        read[r] is None
        for r in (
            "01/05/2021",
            "(9,9)",
            "3457,3876,9823",
            "1引起了2",
            "2.科尔大学篮球队的每个球员身高都在 6 英尺以上。",
        )
    )
    numeric = zb[zb["reference"].map(lambda r: r != "" and scoring.SCORERS["number"].applies(r))]
    assert len(numeric) == 45


@pytest.mark.parametrize(
    "text, value",
    [
        ("共有１２３个", 123),
        ("总价 1,234.5 美元", 1234.5),
        ("温度是-5度", -5),
        ("约 85.3%", 0.853),
        ("答案是 3/4，其余 5 个", 0.75),
        ("π^2 / 6 ≈ 1.64493...然而，π² / 6 这个结果", math.pi**2 / 6),
        ("$\\frac{\\pi^2}{6}$", math.pi**2 / 6),
        ("8.07798534×10^10", 8.07798534e10),
        ("约为 7.49 m/s^2。", 7.49),
        ("马有四条腿。", 4),
        ("一百零五个人", 105),
        ("这是一个非常接近的值。", None),
        ("第二个人说", 2),
        ("x - 2", 2),
        ("温度是 -5 度", -5),
        ("(3) -4", 4),
    ],
)
def test_answer_number(text, value):
    number = scoring.answer_number(text)
    assert (number is None) if value is None else number.value == pytest.approx(value)


def test_numbers_tolerance_and_fractions():
    ref = scoring.reference_numbers("2/7")[0]
    match = lambda text, r=ref: scoring.numbers_match(scoring.answer_number(text), r)  # noqa: E731
    assert match("2/7") and match("约 0.2857") and match("0.29") and match("28.57%")
    assert not match("0.3") and not match("1/7") and not match("0.28")  # one digit is not a rounding; 0.28 is off
    seven = scoring.reference_numbers("7.22 m/s/s")[0]
    assert match("7.2207", seven) and not match("7.20", seven)
    banana = scoring.reference_numbers("27043")[0]
    assert match("27043", banana) and not match("27044", banana)  # integers compare exactly
    assert match("占 60%", scoring.reference_numbers("60")[0]) and match("80", scoring.reference_numbers("80%")[0])
    assert scoring.numbers_match(scoring.Number(100.0, "100"), scoring.Number(100.05, "100.05"), rel_tol=1e-3)


@pytest.mark.parametrize(
    "item_id, model, right",
    [
        ("advanced-003", "GPT4", True),  # 约为 7.22 m/s²: the ² is an index, not the answer
        ("advanced-003", "商量", False),  # 7.20
        ("advanced-003", "讯飞", False),  # 7.49 m/s^2
        ("advanced-014", "GPT3.5", True),  # 123456 * 654321 = 80779853376
        ("advanced-014", "minimax", False),  # 999,948,721,752
        ("advanced-016", "GPT4", True),  # π^2 / 6
        ("basic-009", "GPT4", True),  # 马有四条腿。
        ("advanced-105", "GPT4", True),  # 三个人 …, then 第二个人 (ordinals do not count)
        ("advanced-123", "GPT4", True),  # 60% for the reference 60
        ("advanced-108", "minimax", False),  # 重2公斤 for -2kg
        ("advanced-078", "GPT3.5", True),  # 选项“了解操作顺序”: numbered choice 3 by its text
    ],
)
def test_number_on_real_answers(item, item_id, model, right):
    answer, reference, prompt = real(item, item_id, model)
    assert scoring.scorers_for(reference) == ["number", "rouge_l"]
    assert scoring.SCORERS["number"].score(answer, reference, prompt) == float(right)


# --------------------------------------------------------------------------------------------- containment
def test_contains_normalisation(item):
    contains = scoring.SCORERS["contains"]
    assert scoring.normalize_text("Ｓｈｅ  did NOT，go!") == "shedidnotgo"
    assert contains.score("Ｓｈｅ  DID not go to the market！", "She did not go to the market.")
    assert contains.score("我家里养了一只家猫", "猫/家猫") and contains.alternatives("猫/家猫") == ["猫", "家猫"]
    assert contains.alternatives("01/05/2021") == ["01052021"]
    assert contains.score("排好序是 3457, 3876, 9823", "3457,3876,9823")
    assert not contains.score("这个说法是不正确的", "正确") and contains.score("这个说法正确", "正确")
    assert contains.score("答案：没有人。", "没有人")  # a reference that itself starts with a negation
    assert not contains.applies("是") and not contains.applies("d") and not contains.applies("24")
    answer, reference, prompt = real(item, "basic-001", "GPT4")
    assert reference == "艾森豪威尔" and contains.score(answer, reference, prompt) == 1.0


# --------------------------------------------------------------------------------------------- ROUGE-L
def test_rouge_l_chinese_matches_rouge_chinese(item):
    import jieba
    from rouge_chinese import Rouge

    assert scoring.rouge_l("北京是中国的首都", "中国的首都是北京") == pytest.approx(0.6, abs=1e-6)
    assert scoring.rouge_l("苹果", "香蕉") == 0.0 and scoring.rouge_l("", "香蕉") == 0.0
    assert scoring.rouge_l("相见时难别亦难", "相见时难别亦难") == pytest.approx(1.0, abs=1e-6)
    rouge = Rouge(metrics=["rouge-l"])
    for item_id, model in (("advanced-101", "GPT4"), ("advanced-044", "GPT4"), ("basic-057", "GPT4")):
        answer, reference, _ = real(item, item_id, model)
        words = [" ".join(w for w in jieba.cut(t) if w.strip()) for t in (answer, reference)]
        expected = rouge.get_scores(*words)[0]["rouge-l"]["f"]
        assert scoring.rouge_l(answer, reference) == pytest.approx(expected, abs=1e-12) and expected > 0


def test_lcs_bit_parallel_matches_dynamic_programming():
    rng = np.random.default_rng(0)
    for _ in range(200):
        a, b = (list(rng.choice(list("abcd"), rng.integers(0, 25))) for _ in range(2))
        table = np.zeros((len(a) + 1, len(b) + 1), dtype=int)
        for i in range(1, len(a) + 1):
            for j in range(1, len(b) + 1):
                table[i, j] = table[i - 1, j - 1] + 1 if a[i - 1] == b[j - 1] else max(table[i - 1, j], table[i, j - 1])
        assert _lcs_length(a, b) == table[-1, -1]


# --------------------------------------------------------------------------------------------- score_answers
def test_score_answers_by_default_adds_the_keyed_scorer_with_its_rule(zb):
    sub = zb[zb["item_id"].isin(["advanced-007", "basic-001", "basic-000"])]
    scores = scoring.score_answers(answers_long(sub, models=["GPT4"]), zb, progress=False)
    keyed = scores[scores["scorer"] == "keyed"]
    assert set(keyed["item_id"]) == {"advanced-007", "basic-001"}  # basic-000 has no reference
    assert (keyed["rule"] != "").all() and (scores.loc[scores["scorer"] != "keyed", "rule"] == "").all()


def test_score_answers_dispatch_and_against(zb):
    # option, number, contains, a one-character reference, an open item
    ids = ["advanced-007", "basic-009", "basic-001", "advanced-013", "basic-000"]
    sub = zb[zb["item_id"].isin(ids)]
    answers = answers_long(sub, models=["GPT4", "moss"])
    answers.loc[answers["model"] == "moss", "answer"] = ""  # an empty answer scores 0
    scores = scoring.score_answers(answers, zb, scoring.REFERENCE_SCORERS, progress=False)  # the classic four
    assert list(scores.columns) == list(scoring.SCORE_COLUMNS)
    got = scores.groupby("item_id")["scorer"].agg(lambda s: sorted(set(s))).to_dict()
    assert got == {
        "advanced-007": ["option", "rouge_l"],
        "basic-009": ["number", "rouge_l"],
        "basic-001": ["contains", "rouge_l"],
        "advanced-013": ["rouge_l"],
        "basic-000": ["rouge_l"],
    }
    open_item = scores[scores["item_id"] == "basic-000"]
    assert open_item["against"].tolist() == ["GPT4"] and open_item["model"].tolist() == ["moss"]  # GPT4 not vs itself
    assert (scores.loc[scores["item_id"] != "basic-000", "against"] == "reference").all()
    assert (scores.loc[scores["model"] == "moss", "score"] == 0).all()
    assert scores.set_index(["item_id", "model", "scorer"]).loc[("basic-009", "GPT4", "number"), "score"] == 1.0
    assert scores["score"].between(0, 1).all()
    with pytest.raises(KitError, match="not in the Z-Bench table"):
        scoring.score_answers(answers.assign(item_id="basic-999"), zb)
    with pytest.raises(KitError, match="lacks column"):
        scoring.score_answers(answers.drop(columns="answer"), zb)
    with pytest.raises(KitError, match="unknown scorer"):
        scoring.score_answers(answers, zb, scorers=["bleu"])


# --------------------------------------------------------------------------------------------- aggregation
def test_bootstrap_ci_contains_mean_and_is_seeded():
    values = np.random.default_rng(1).random(200)
    mean, low, high = scoring.bootstrap_ci(values, rng=7)
    assert low < mean < high and mean == pytest.approx(values.mean())
    assert scoring.bootstrap_ci(values, rng=7) == (mean, low, high)
    assert scoring.bootstrap_ci(values, rng=8) != (mean, low, high)
    narrow = scoring.bootstrap_ci(values, rng=7, ci=0.5)
    assert low < narrow[1] < narrow[2] < high
    assert scoring.bootstrap_ci([1.0, 1.0, 1.0]) == (1.0, 1.0, 1.0)
    assert all(math.isnan(x) for x in scoring.bootstrap_ci([]))


def test_aggregate_shapes_overall_and_tags(zb):
    ids = zb["item_id"].iloc[[0, 1, 70, 71, 72, 300]].tolist()  # basic ×2, advanced ×3, domain ×1
    sub = zb[zb["item_id"].isin(ids)]
    scores = pd.DataFrame(
        [
            (i, s, m, "x", float(k % 2), "reference")
            for k, (i, s) in enumerate(zip(sub["item_id"], sub["split"], strict=False))
            for m in ("a", "b")
        ],
        columns=list(scoring.SCORE_COLUMNS),
    )
    agg = scoring.aggregate(scores, n_boot=200)
    assert list(agg.columns) == ["model", "split", "scorer", "n", "score", "ci_low", "ci_high"]
    assert len(agg) == 2 * 4 and agg["split"].tolist()[:4] == ["basic", "advanced", "domain", "overall"]
    overall = agg[(agg["model"] == "a") & (agg["split"] == "overall")].iloc[0]
    assert overall["n"] == 6 and overall["score"] == pytest.approx(0.5)
    assert (agg["ci_low"] <= agg["score"]).all() and (agg["score"] <= agg["ci_high"]).all()
    assert agg.equals(scoring.aggregate(scores, n_boot=200))  # seeded
    by_tag = scoring.aggregate(scores, by=("model", "tag", "scorer"), n_boot=200, zbench=zb)
    n_tags = sub["tags"].map(len).sum()
    assert by_tag.loc[by_tag["tag"] != "overall", "n"].sum() == 2 * n_tags  # an item counts under each tag
    assert by_tag.loc[by_tag["tag"] == "overall", "n"].tolist() == [6, 6] and by_tag["tag"].iloc[-1] == "overall"
    with pytest.raises(KitError, match="cannot aggregate by"):
        scoring.aggregate(scores, by=("nope",))


# --------------------------------------------------------------------------------------------- leaderboard
@pytest.fixture(scope="module")
def board():
    return scoring.leaderboard()


def test_leaderboard_ranks_reference_models(board):
    assert list(board.columns) == ["model", "split", "scorer", "n", "coverage", "score", "ci_low", "ci_high"]
    assert set(board["split"]) == {"basic", "advanced", "domain", "overall"}
    assert set(board["model"]) == set(REFERENCE_MODELS)
    overall = board[board["split"] == "overall"]
    for name in ("option", "number"):
        rows = overall[overall["scorer"] == name].reset_index(drop=True)
        assert "GPT4" in rows["model"].head(2).tolist() and rows["score"].is_monotonic_decreasing
    cov = overall.groupby("scorer")[["n", "coverage"]].first()
    assert cov.loc["option", "n"] == 38 and cov.loc["option", "coverage"] == pytest.approx(38 / 311)
    assert cov.loc["number", "n"] == 45 and cov.loc["rouge_l", "n"] == 242
    assert board.attrs["leaderboard"]["zbench"]["dataset"] == "Z-Bench 1.0"


def test_leaderboard_json_schema(board, monkeypatch):
    monkeypatch.setattr(scoring_board, "leaderboard", lambda splits=None, **kw: board)
    records = scoring.leaderboard_json()
    assert len(records) == len(board) and json.loads(json.dumps(records, ensure_ascii=False)) == records
    assert all(set(r) == set(scoring.LEADERBOARD_KEYS) for r in records)
    first = records[0]
    assert isinstance(first["n"], int) and isinstance(first["score"], float) and isinstance(first["model"], str)
    assert all(r["ci_low"] <= r["score"] <= r["ci_high"] for r in records)


def test_leaderboard_one_split():
    basic = scoring.leaderboard("basic", scorers=("number", "contains"), n_boot=100)
    assert set(basic["split"]) == {"basic", "overall"} and set(basic["scorer"]) == {"number", "contains"}
    with pytest.raises(KitError, match="unknown Z-Bench split"):
        scoring.leaderboard("nope")


# --------------------------------------------------------------------------------------------- judge
def test_sequence_probs_handles_multi_token_scores():
    # tokens: 1 → "1", 2 → "0", 3 → "2"; the score "10" is "1" + "0", a continuation of "1"
    dists = {(): np.array([0.0, 0.5, 0.0, 0.5]), (1,): np.array([0.0, 0.0, 0.6, 0.0])}
    probs = scoring.sequence_probs(lambda prefix: dists[prefix], [(1,), (3,), (1, 2)])
    assert probs == pytest.approx([0.5 * 0.4, 0.5, 0.5 * 0.6])
    with pytest.raises(KitError, match="distinct"):
        scoring.sequence_probs(lambda prefix: dists[prefix], [(1,), (1,)])


def test_combine_orders():
    assert scoring.combine_orders("A", "B").outcome == "win"  # candidate chosen in both positions
    assert scoring.combine_orders("B", "A").outcome == "loss"
    tie = scoring.combine_orders("A", "A")  # the first position won twice
    assert tie.outcome == "tie" and not tie.consistent and tie.score == 0.5
    assert not scoring.combine_orders("B", "B").consistent
    with pytest.raises(KitError):
        scoring.combine_orders("A", "C")


@pytest.fixture(scope="module")
def judge(tiny_models):
    return scoring.Judge(tiny_models("llama"), device="cpu")


def test_judge_grades_deterministically(judge):
    grade = judge.grade("1+1等于几？", "等于2。", reference="2")
    assert len(grade.probs) == 10 and sum(grade.probs) == pytest.approx(1.0)
    assert 1 <= grade.expected <= 10 and grade.greedy == int(np.argmax(grade.probs)) + 1
    assert judge.grade("1+1等于几？", "等于2。", reference="2") == grade
    assert 0 <= grade.score <= 1
    long = judge.grade("介绍一下长城。", "长城很长。" * 400)  # longer than the tiny model's 512 positions
    assert sum(long.probs) == pytest.approx(1.0)
    instruction, lead = scoring.grading_prompt("Q", "A", "R", language="en")
    assert "[Reference answer]\nR" in instruction and lead == "Rating (1-10): "


def test_judge_pairwise_both_orders(judge, zb):
    same = judge.compare("1+1等于几？", "等于2。", "等于2。")
    assert same.outcome == "tie" and not same.consistent and same.first == same.second  # pure position preference
    assert judge.compare("1+1等于几？", "等于2。", "等于3。") == judge.compare("1+1等于几？", "等于2。", "等于3。")
    sub = zb[zb["item_id"].isin(["basic-009", "basic-001"])]
    answers = answers_long(sub, models=["GPT4", "moss", "文心"])
    pair = scoring.pairwise_scores(answers, judge, baseline="GPT4", zbench=zb, progress=False)
    assert len(pair) == 4 and set(pair["model"]) == {"moss", "文心"} and (pair["against"] == "GPT4").all()
    assert set(pair["verdict"]) <= {"win", "tie", "loss"}
    assert ((pair["verdict"] == "tie") == ~pair["consistent"]).all()
    summary = scoring.pairwise_summary(pair).set_index("model")
    assert (summary["wins"] + summary["ties"] + summary["losses"] == summary["n"]).all()
    assert (summary["position_bias"] == summary["inconsistent"] / summary["n"]).all()
    graded = scoring.judge_scores(answers, judge, zb, progress=False)
    assert len(graded) == 6 and (graded["scorer"] == "judge").all() and graded["score"].between(0, 1).all()
    assert (graded["against"] == "reference").all() and graded["judge_expected"].between(1, 10).all()


def test_bias_table_reads_the_judge_section_of_evaluate_json():
    info = {
        "length_bias": [{"model": "a", "items": 5, "median_chars": 40.0, "mean_grade": 6.0, "spearman": 0.7}],
        "position_bias": [{"model": "a", "n": 5, "inconsistent": 2, "position_bias": 0.4}],
        "self_preference": {"flagged": True, "models": ["a"], "mean_grade_self": 6.0, "mean_grade_others": None},
    }
    table = scoring.bias_table(info)
    assert table.to_dict("records") == [
        {"model": "a", "items": 5, "mean_grade": 6.0, "length_rho": 0.7, "position_bias": 0.4,
         "judge_is_this_model": True}
    ]  # fmt: skip
    assert scoring.bias_table(None) is None


class LengthJudge:
    """A judge without a model: prefers the longer answer; equal lengths → it picks position A both times (a tie)."""

    name, language = "length-judge", "zh"

    def compare(self, question, answer, baseline):
        first = "A" if len(answer) >= len(baseline) else "B"
        second = "B" if len(answer) > len(baseline) else "A"
        return scoring.combine_orders(first, second)


def test_pairwise_judges_each_dpo_model_against_its_start_in_both_orders(zb):
    from llm4academic.scoring.verdicts import START_SCORER, pairwise_tasks

    items = ["basic-001", "basic-002", "basic-003"]
    texts = {
        "x": ["短", "短", "短"],
        "x-tuned": ["中等长度", "中等长度", "短"],
        "x-tuned-dpo": ["很长很长的回答", "短", "短"],  # win, loss, tie against x-tuned
        "y": ["中等长度", "", "短"],
        "y-dpo": ["很长很长的回答", "很长很长的回答", "很长很长的回答"],  # y answered nothing to basic-002
    }
    answers = pd.DataFrame(
        [(i, "basic", m, t) for m, ts in texts.items() for i, t in zip(items, ts, strict=True)],
        columns=["item_id", "split", "model", "answer"],
    )
    starts = {"x-tuned-dpo": "x-tuned", "y-dpo": "y"}
    pair = scoring.pairwise_scores(answers, LengthJudge(), "GPT4", zb, starts=starts, progress=False)
    vs_gpt4 = pair[pair["against"] == "GPT4"]
    assert (vs_gpt4["scorer"] == "pairwise").all() and len(vs_gpt4) == 14  # 5 models × 3 items, y's empty one skipped
    start = pair[pair["scorer"] == START_SCORER].set_index(["model", "item_id"])
    assert sorted(start.index) == sorted([("x-tuned-dpo", i) for i in items] + [("y-dpo", "basic-001"),
                                                                             ("y-dpo", "basic-003")])  # fmt: skip
    assert (start.loc["x-tuned-dpo", "against"] == "x-tuned").all() and (start.loc["y-dpo", "against"] == "y").all()
    x = start.loc["x-tuned-dpo"]
    assert x["verdict"].tolist() == ["win", "loss", "tie"] and x["consistent"].tolist() == [True, True, False]
    assert x["first"].tolist() == ["A", "B", "A"] and x["second"].tolist() == ["B", "A", "A"]  # both orders asked
    assert x["score"].tolist() == [1.0, 0.0, 0.5]
    summary = scoring.pairwise_summary(pair).set_index(["model", "baseline"])
    assert summary.loc[("x-tuned-dpo", "x-tuned"), ["wins", "ties", "losses", "inconsistent"]].tolist() == [1, 1, 1, 1]
    assert len(summary) == 7 and summary.loc[("x", "GPT4"), "n"] == 3
    assert pair.attrs["scoring"]["starts"] == starts
    # no configured baseline: only the DPO models against their starts; a start that is the baseline is asked once
    only = scoring.pairwise_scores(answers, LengthJudge(), None, zb, starts=starts, progress=False)
    assert set(only["scorer"]) == {START_SCORER} and len(only) == 5
    once = pairwise_tasks(answers, zb.set_index("item_id"), "x-tuned", starts)
    assert [(t.rec.model, t.against, t.scorer) for t in once].count(("x-tuned-dpo", "x-tuned", "pairwise")) == 3
    assert not [t for t in once if t.rec.model == "x-tuned-dpo" and t.scorer == START_SCORER]
