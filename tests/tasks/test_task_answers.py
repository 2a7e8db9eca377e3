"""Answer extraction and comparison on hand-written model outputs, including malformed ones."""

from __future__ import annotations

import pytest

from plasticity.tasks.answers import (
    answer_key,
    boxed_contents,
    extract_answer,
    is_correct,
    last_boxed,
    normalize_answer,
    parse_number,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("First 48/2 = 24.\nThen 48 + 24 = 72.\n#### 72", "72"),
        ("#### 1,000", "1000"),
        ("#### $1,234", "1234"),
        ("#### -3", "-3"),
        ("#### 0.75.", "0.75"),
        ("#### 3/4", "3/4"),
        ("#### 72 apples", "72"),
        ("The answer is: 18", "18"),
        ("So the answer is 18 apples.", "18"),
        ("The answer is: \\frac{1}{2}", "1/2"),
        ("We get \\boxed{5}.", "5"),
        ("\\boxed{\\frac{1}{\\sqrt{2}}}", "\\frac{1}{\\sqrt{2}}"),  # nested braces
        ("first \\boxed{3} then \\boxed{4}", "4"),  # multiple boxed: the last
        ("\\boxed{\\dfrac{3}{4}}", "3/4"),
        ("\\boxed{\\left( 1, 2 \\right)}", "(1,2)"),
        ("\\boxed{90^\\circ}", "90"),
        ("\\boxed{50\\%}", "50"),
        ("\\boxed{5\\text{ cm}}", "5"),
        ("\\boxed{\\$12.50}", "12.50"),
        ("\\boxed{x = 7}", "7"),
        ("\\boxed{2\\frac{1}{4}}", "9/4"),
        ("\\boxed{\\text{Monday}}", "Monday"),
        ("#### 5\nlater: \\boxed{6}", "6"),  # the marker that comes last wins
        ("\\boxed{6} and finally\n#### 5", "5"),
    ],
)
def test_numeric_extraction(text: str, expected: str) -> None:
    assert extract_answer("numeric", text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   \n ",
        "no marker here, 5 apples and 7 pears",
        "#### ",
        "#### \nsome text",
        "\\boxed{12",  # unterminated box
        "\\boxed{}",
        "The answer is not obvious, so let us try again.",
    ],
)
def test_numeric_malformed_gives_none(text: str) -> None:
    assert extract_answer("numeric", text) is None


def test_numeric_fallback_only_when_allowed() -> None:
    text = "It costs 5 dollars, then 1,250 more."
    assert extract_answer("numeric", text) is None
    assert extract_answer("numeric", text, fallback=True) == "1250"
    assert extract_answer("numeric", "#### \n", fallback=True) is None
    assert extract_answer("numeric", "#### \nwe had 3 then 10-4", fallback=True) == "4"
    assert extract_answer("numeric", "answer \\boxed{12", fallback=True) == "12"
    # a marker beats the fallback
    assert extract_answer("numeric", "#### 8 but 9 later", fallback=True) == "8"


@pytest.mark.parametrize(
    ("pred", "gold", "ok"),
    [
        ("1/2", "0.5", True),
        ("\\frac{1}{2}", "0.5", True),
        ("\\frac12", ".5", True),
        ("1,000", "1000", True),
        ("1000.0000001", "1000", True),
        ("1001", "1000", False),
        ("-3", "3", False),
        ("0", "0.0", True),
        ("72.", "72", True),
        ("$18", "18.00", True),
        ("(1,2)", "\\left( 1, 2 \\right)", True),
        ("\\frac{\\pi}{2}", "\\dfrac{\\pi}{2}", True),
        ("\\frac{\\pi}{3}", "\\dfrac{\\pi}{2}", False),
        (None, "1", False),
        ("1", None, False),
        ("", "", False),
        ("1" * 400, "8571", False),  # a runaway answer with more digits than a float holds: no OverflowError
        ("1" * 400, "1" * 400, True),
        ("1" * 399 + "2", "1" * 400, True),  # within the 1e-6 relative tolerance
        ("0.0000000000001", "0", True),  # 1e-13: within the 1e-12 absolute tolerance
    ],
)
def test_numeric_equivalence(pred: str | None, gold: str | None, ok: bool) -> None:
    assert is_correct("numeric", pred, gold) is ok


def test_numeric_answer_keys_group_equivalent_answers() -> None:
    keys = {answer_key("numeric", a) for a in ("0.5", "1/2", "\\frac{1}{2}", "\\dfrac{1}{2}", ".5", "0.50")}
    assert keys == {"1/2"}
    assert answer_key("numeric", "1,000") == answer_key("numeric", "1000") == "1000"
    assert answer_key("numeric", "\\left( 1, 2 \\right)") == answer_key("numeric", "(1, 2)")
    assert answer_key("numeric", "") is None
    assert answer_key("numeric", None) is None


def test_number_parsing_and_normalization() -> None:
    assert parse_number("3/0") is None
    assert parse_number("abc") is None
    assert parse_number("-\\frac{3}{4}") == parse_number("-0.75")
    assert normalize_answer(" \\$1,000. ") == "1000"
    assert normalize_answer("") == ""


def test_boxed_helpers() -> None:
    text = "a \\boxed{\\frac{a}{b}} b \\fbox{c} d \\boxed 7 e"
    assert [c for _, c in boxed_contents(text)] == ["\\frac{a}{b}", "c", "7"]
    assert last_boxed("nothing") is None
    assert last_boxed("") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Reasoning... The answer is (B).", "B"),
        ("Answer: c", "C"),
        ("Answer: (d) because", "D"),
        ("#### D", "D"),
        ("so \\boxed{E}", "E"),
        ("\\boxed{\\text{(A)}}", "A"),
        ("the answer is A", "A"),
        ("First the answer is (C), but on reflection the answer is (D).", "D"),
        ("The correct answer is option J.", "J"),
    ],
)
def test_choice_extraction(text: str, expected: str) -> None:
    assert extract_answer("choice", text) == expected


@pytest.mark.parametrize(
    "text", ["", "no letter here", "the answer is a bit unclear", "Answer: I think so", "#### 12"]
)
def test_choice_malformed_gives_none(text: str) -> None:
    assert extract_answer("choice", text) is None


def test_choice_comparison() -> None:
    assert is_correct("choice", "b", "B")
    assert is_correct("choice", "(B)", "B")
    assert not is_correct("choice", "C", "B")
    assert not is_correct("choice", "BC", "B")
    assert answer_key("choice", " d. ") == "D"
    assert extract_answer("choice", "I pick (B) here", fallback=True) == "B"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("#### yes", "yes"),
        ("Answer: No.", "no"),
        ("The answer is maybe.", "maybe"),
        ("so \\boxed{yes}", "yes"),
        ("Answer: yes. Some say no.", "yes"),  # an explicit marker beats the fallback
        ("Results are mixed, so maybe; not a clear yes", "yes"),  # fallback: last occurrence
        ("The answer is not known", None),
        ("", None),
    ],
)
def test_yesno_extraction(text: str, expected: str | None) -> None:
    assert extract_answer("yesno", text) == expected


def test_yesno_without_fallback_and_comparison() -> None:
    assert extract_answer("yesno", "probably yes", fallback=False) is None
    assert is_correct("yesno", "Yes", "yes")
    assert not is_correct("yesno", "no", "maybe")
    assert answer_key("yesno", "perhaps") is None


def test_unknown_answer_type() -> None:
    with pytest.raises(ValueError, match="unknown answer type"):
        extract_answer("essay", "text")


# MATH answers: hand-built LaTeX pairs that the numeric path alone gets wrong or right
@pytest.mark.parametrize(
    ("pred", "gold", "ok"),
    [
        ("\\frac{1}{2}", "0.5", True),
        ("\\dfrac12", "\\frac{1}{2}", True),
        ("\\sqrt{2}", "\\sqrt2", True),
        ("\\frac{\\sqrt{3}}{2}", "\\frac{\\sqrt3}{2}", True),
        ("2\\sqrt{2}", "\\sqrt{8}", True),
        ("(1,2]", "(1, 2]", True),
        ("(1,2)", "[1,2]", False),  # open vs closed interval
        ("x^2+1", "1+x^2", True),
        ("\\{1,2\\}", "\\{2,1\\}", True),
        ("\\pi", "3.14", False),
        ("3", "4", False),
        (None, "1", False),
    ],
)
def test_math_answer_equivalence_latex_pairs(pred: str | None, gold: str, ok: bool) -> None:
    assert is_correct("math", pred, gold) is ok


def test_math_task_uses_math_verify_and_gsm8k_keeps_the_numeric_path() -> None:
    from plasticity.tasks.registry import get_task

    math, gsm8k = get_task("math"), get_task("gsm8k")
    assert math.answer_type == "math" and gsm8k.answer_type == "numeric"
    assert math.score("so the answer is $\\boxed{\\dfrac{\\sqrt{3}}{2}}$", {"answer": "\\frac{\\sqrt3}{2}"})
    assert not is_correct("numeric", "\\sqrt{8}", "2\\sqrt{2}")  # the fast numeric path has no algebra
    # equivalent spellings vote together in Maj@k
    assert answer_key("math", "\\sqrt2") == answer_key("math", "\\sqrt{2}")
    assert answer_key("math", "\\dfrac12") == answer_key("math", "0.5")


def test_math_verify_is_imported_lazily() -> None:
    import subprocess
    import sys

    code = ("import sys, plasticity.tasks.answers as a; a.is_correct('numeric', '1', '1'); "
            "print('math_verify' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_pubmedqa_yesno_fallback_matches_the_docstring() -> None:
    from plasticity.tasks.registry import get_task

    task = get_task("pubmedqa")  # no answer marker: the last yes/no/maybe word, as answers.py documents
    assert task.extract("The trial supports it, so probably yes") == "yes"
    assert task.extract("Answer: no. Others say yes.") == "no"
