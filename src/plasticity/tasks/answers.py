"""Final-answer extraction and comparison for generated chain-of-thought responses.

Four answer types:

* ``numeric`` -- GSM8K ``#### 72``, MATH ``\\boxed{...}`` and MetaMathQA ``The answer is: 18``. The marker
  that appears LAST in the text wins. Answers are normalized (commas in ``1,000``, ``$``, trailing ``.``,
  ``\\frac{a}{b}``, ``\\left( \\right)``, ``^\\circ``, ``\\%``, ``\\text{...}`` units, spaces). With
  ``fallback=True`` the last number in the text is used when no marker is found.
* ``math`` -- competition-math (MATH) answers: extracted like ``numeric``; compared by the fast numeric path when
  both sides parse as numbers, else by Hugging Face's ``math-verify`` (``\\frac{1}{2}`` = ``\\dfrac12`` = ``0.5``,
  ``\\sqrt{2}`` = ``\\sqrt2``, intervals, sets, expressions). ``math_verify`` is imported on first use only.
* ``choice`` -- a multiple-choice letter A-J ("The answer is (B)", "Answer: B", "#### B", ``\\boxed{B}``).
* ``yesno`` -- yes / no / maybe (PubMedQA); falls back to the last yes/no/maybe word by default.

``extract_answer`` returns a normalized answer string (or None), ``answer_key`` a canonical hashable key so
equivalent answers group together (majority voting), ``is_correct`` compares a prediction with a gold answer:
numerically with a 1e-6 relative tolerance when both parse as numbers (``1/2 == 0.5``), else as normalized
strings.
"""

from __future__ import annotations

import re
from collections.abc import Hashable
from fractions import Fraction

ANSWER_TYPES = ("numeric", "math", "choice", "yesno")
CHOICE_LETTERS = "ABCDEFGHIJ"
YESNO = ("yes", "no", "maybe")
REL_TOL = 1e-6

# A number in running text: 1,000 / 12 / -3.5 / .5 / 3/4. The sign is only taken when it does not follow a
# word character, so "10-3" yields 10 and 3, not -3.
_NUMBER_RE = re.compile(
    r"(?:(?<![\w.])-)?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*(?:\d+(?:\.\d+)?))?|(?:(?<![\w.])-)?\.\d+"
)
_PLAIN_NUMBER_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_THOUSANDS_RE = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_HASHES_RE = re.compile(r"####[ \t]*([^\n]*)")
_ANSWER_IS_RE = re.compile(r"answer\s+is\s*[:：]?[ \t]*([^\n]*)", re.IGNORECASE)
_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\b")


def _check_type(answer_type: str) -> None:
    if answer_type not in ANSWER_TYPES:
        raise ValueError(f"unknown answer type {answer_type!r}; known: {', '.join(ANSWER_TYPES)}")


# ---------------------------------------------------------------------------------------------------------
# \boxed{...}


def boxed_contents(text: str) -> list[tuple[int, str]]:
    """All ``\\boxed{...}`` / ``\\fbox{...}`` contents with their positions, braces balanced.

    An unterminated box is ignored; ``\\boxed 5`` (no braces) yields the following token.
    """
    out: list[tuple[int, str]] = []
    for m in _BOXED_RE.finditer(text):
        i = m.end()
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            depth = 0
            for j in range(i, len(text)):
                if text[j] == "{":
                    depth += 1
                elif text[j] == "}":
                    depth -= 1
                    if depth == 0:
                        out.append((m.start(), text[i + 1 : j]))
                        break
        else:
            tok = re.match(r"[^\s$]+", text[i:])
            if tok:
                out.append((m.start(), tok.group(0)))
    return out


def last_boxed(text: str) -> str | None:
    """Contents of the last ``\\boxed{...}`` in `text`, or None."""
    found = boxed_contents(text or "")
    return found[-1][1] if found else None


# ---------------------------------------------------------------------------------------------------------
# Normalization


def _replace_frac(s: str) -> str:
    """``\\frac{a}{b}`` -> ``a/b`` for plain numbers (mixed numbers too: ``2\\frac{1}{4}`` -> ``9/4``)."""

    def mixed(m: re.Match[str]) -> str:
        whole, num, den = int(m.group(1)), int(m.group(2)), int(m.group(3))
        if den == 0:
            return m.group(0)
        return f"{whole * den + num}/{den}"

    s = re.sub(r"(?<![\d.])(\d+)\\frac\{(\d+)\}\{(\d+)\}", mixed, s)
    return re.sub(r"\\frac\{\s*(-?[\d.]+)\s*\}\{\s*(-?[\d.]+)\s*\}", r"\1/\2", s)


def normalize_answer(text: str) -> str:
    """Normalize a short final answer (numeric or simple LaTeX) so equivalent spellings compare equal."""
    s = (text or "").strip()
    if not s:
        return ""
    s = s.replace("\\$", "").replace("$", "")
    s = s.replace("\\displaystyle", "")
    s = re.sub(r"\\(?:left|right|bigl|bigr|Bigl|Bigr|big|Big)(?![a-zA-Z])\s*", "", s)
    s = re.sub(r"\\[!,;:]|\\ |~", " ", s)
    s = re.sub(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|°", "", s)
    s = s.replace("\\%", "").replace("%", "")
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    # units: a \text{...} after a number or closing brace at the end ("5\text{ cm}^2") is dropped
    s = re.sub(
        r"(?<=[\d}])\s*\\(?:text|textrm|mbox|mathrm)\s*\{\s*[A-Za-z][A-Za-z .]*\}(?:\^\{?\d\}?)?\s*$", "", s
    )
    s = re.sub(r"\\(?:text|textrm|textbf|mbox|mathrm|mathbf)\s*\{([^{}]*)\}", r"\1", s)
    # \frac12 -> \frac{1}{2}; \sqrt2 -> \sqrt{2}
    s = re.sub(r"\\frac\s*(\d)\s*(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac\s*\{([^{}]*)\}\s*(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\sqrt\s*(\d)", r"\\sqrt{\1}", s)
    s = s.strip()
    # "x = 5" -> "5" (a single variable on the left)
    m = re.fullmatch(r"(?:[a-zA-Z]|\\[a-zA-Z]+)\s*=\s*(.+)", s)
    if m:
        s = m.group(1)
    s = re.sub(r"\s+", "", s)
    s = re.sub(r"^-\\frac\{(\d+(?:\.\d+)?)\}\{(\d+(?:\.\d+)?)\}$", r"-\1/\2", s)
    s = _replace_frac(s).rstrip(".")
    if _THOUSANDS_RE.fullmatch(s):
        s = s.replace(",", "")
    if s.startswith("+"):
        s = s[1:]
    s = re.sub(r"^(-?)\.(\d)", r"\g<1>0.\2", s)
    return s


def parse_number(text: str | None) -> Fraction | None:
    """An answer as an exact rational (``"1,000"``, ``"-3.5"``, ``"3/4"``, ``"\\frac{1}{2}"``), or None."""
    if text is None:
        return None
    s = normalize_answer(text)
    if not s:
        return None
    parts = s.split("/")
    if len(parts) > 2 or not all(_PLAIN_NUMBER_RE.fullmatch(p) for p in parts):
        return None
    try:
        value = Fraction(parts[0])
        if len(parts) == 2:
            den = Fraction(parts[1])
            if den == 0:
                return None
            value /= den
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    return value


def _first_number(text: str) -> str | None:
    m = _NUMBER_RE.search(text)
    return m.group(0) if m else None


def _last_number(text: str) -> str | None:
    found = _NUMBER_RE.findall(text)
    return found[-1] if found else None


# ---------------------------------------------------------------------------------------------------------
# Extraction per type


def _looks_like_math(span: str) -> bool:
    """True for short answers such as ``(1,2)``, ``\\frac{\\pi}{2}``, ``x^2+1``; False for English prose."""
    bare = re.sub(r"\\(?:text|textrm|mbox|mathrm)\s*\{[^{}]*\}|\\[a-zA-Z]+", " ", span)
    return len(span) <= 60 and re.search(r"[A-Za-z]{3,}", bare) is None


def _numeric_from_span(span: str, *, keep_string: bool) -> str | None:
    """Answer from the text after a marker: a number, else (if `keep_string`) a short math expression."""
    span = span.strip().rstrip(".").strip()
    if not span:
        return None
    boxed = last_boxed(span)
    if boxed is not None:
        span = boxed
    if parse_number(span) is not None:
        return normalize_answer(span)
    first = _first_number(span)
    number_then_words = re.fullmatch(r"[-+$\\\d.,/ ]*\d[-$\\\d.,/ ]*[A-Za-z .%]*", span) is not None
    if first is not None and (number_then_words or not keep_string):
        return normalize_answer(first)
    if keep_string and _looks_like_math(span):
        return normalize_answer(span) or None
    return None


def _extract_numeric(text: str, fallback: bool) -> str | None:
    candidates: list[tuple[int, str]] = []
    for m in _HASHES_RE.finditer(text):
        value = _numeric_from_span(m.group(1), keep_string=False)
        if value is not None:
            candidates.append((m.start(), value))
    for pos, content in boxed_contents(text):
        value = normalize_answer(content)
        if value:
            candidates.append((pos, value))
    for m in _ANSWER_IS_RE.finditer(text):
        value = _numeric_from_span(m.group(1), keep_string=True)
        if value is not None:
            candidates.append((m.start(), value))
    if candidates:
        return max(candidates, key=lambda c: c[0])[1]
    if fallback:
        last = _last_number(text)
        if last is not None:
            return normalize_answer(last)
    return None


# "(b)" / "B" (not "I think") / a lone lower-case letter before "." or ")" or the end of the line
_LETTER = r"(?:\(([A-Ja-j])\)|(?!I\s+[a-z])([A-J])(?![\w'])|([a-j])(?=\s*(?:[.)]|$)))"
_CHOICE_MARKERS = [
    re.compile(r"####[ \t]*" + _LETTER, re.MULTILINE),
    re.compile(r"(?i:answer\s+is)\s*[:：]?\s*(?i:option\s+)?" + _LETTER, re.MULTILINE),
    re.compile(r"(?i:answer)\s*[:：]\s*(?i:option\s+)?" + _LETTER, re.MULTILINE),
]


def _choice_letter(text: str) -> str | None:
    """A bare letter answer such as ``B``, ``(b)``, ``\\text{(C)}``, ``D.``."""
    s = normalize_answer(text).strip("()[]{}.:* ")
    return s.upper() if len(s) == 1 and s.upper() in CHOICE_LETTERS else None


def _extract_choice(text: str, fallback: bool) -> str | None:
    candidates: list[tuple[int, str]] = []
    for rx in _CHOICE_MARKERS:
        for m in rx.finditer(text):
            letter = next(g for g in m.groups() if g)
            candidates.append((m.start(), letter.upper()))
    for pos, content in boxed_contents(text):
        letter = _choice_letter(content)
        if letter:
            candidates.append((pos, letter))
    if candidates:
        return max(candidates, key=lambda c: c[0])[1]
    if fallback:
        found = re.findall(r"\(([A-J])\)|^\s*([A-J])[.)]?\s*$", text, re.MULTILINE)
        if found:
            return next(g for g in found[-1] if g)
    return None


_YESNO_WORD = r"\**\s*(yes|no|maybe)\b"
_YESNO_MARKERS = [
    re.compile(r"####[ \t]*" + _YESNO_WORD, re.IGNORECASE),
    re.compile(r"answer\s+is\s*[:：]?\s*" + _YESNO_WORD, re.IGNORECASE),
    re.compile(r"answer\s*[:：]\s*" + _YESNO_WORD, re.IGNORECASE),
]


def _extract_yesno(text: str, fallback: bool) -> str | None:
    candidates: list[tuple[int, str]] = []
    for rx in _YESNO_MARKERS:
        for m in rx.finditer(text):
            candidates.append((m.start(), m.group(1).lower()))
    for pos, content in boxed_contents(text):
        word = normalize_answer(content).lower().strip(".")
        if word in YESNO:
            candidates.append((pos, word))
    if candidates:
        return max(candidates, key=lambda c: c[0])[1]
    if fallback:
        found = re.findall(r"\b(yes|no|maybe)\b", text, re.IGNORECASE)
        if found:
            return found[-1].lower()
    return None


DEFAULT_FALLBACK = {"numeric": False, "math": False, "choice": False, "yesno": True}


def extract_answer(answer_type: str, text: str | None, *, fallback: bool | None = None) -> str | None:
    """The final answer in a generated `text`, normalized, or None when none is found.

    `fallback` (default: False for numeric/choice, True for yesno) allows the last number / letter in
    parentheses / yes-no word when no explicit answer marker is present.
    """
    _check_type(answer_type)
    if not text or not text.strip():
        return None
    fb = DEFAULT_FALLBACK[answer_type] if fallback is None else fallback
    if answer_type in ("numeric", "math"):
        return _extract_numeric(text, fb)
    if answer_type == "choice":
        return _extract_choice(text, fb)
    return _extract_yesno(text, fb)


def answer_key(answer_type: str, answer: str | None) -> Hashable | None:
    """Canonical key of an (extracted) answer, so equivalent answers group together, or None if empty.

    numeric: ``str(Fraction)`` when the answer parses as a number (``"0.5"``, ``"\\frac{1}{2}"`` -> ``"1/2"``;
    ``"1,000"`` -> ``"1000"``), else the normalized string. choice: upper-case letter. yesno: lower-case word.
    """
    _check_type(answer_type)
    if answer is None:
        return None
    if answer_type in ("numeric", "math"):
        value = parse_number(answer)
        if value is not None:
            return str(value)
        norm = normalize_answer(answer)
        if answer_type == "math" and norm:
            parsed = _math_parse(answer)
            return f"math:{parsed[0]}" if parsed else norm
        return norm or None
    if answer_type == "choice":
        return _choice_letter(answer)
    word = normalize_answer(answer).lower().strip(".")
    return word if word in YESNO else None


def numbers_close(p: Fraction, g: Fraction) -> bool:
    """Equal within `REL_TOL` relative (or 1e-12 absolute), as ``math.isclose``, in exact arithmetic: a model's
    answer may have hundreds of digits, past what a float holds."""
    diff = abs(p - g)
    return diff <= Fraction(str(REL_TOL)) * max(abs(p), abs(g)) or diff <= Fraction(1, 10**12)


def is_correct(answer_type: str, predicted: str | None, gold: str | None) -> bool:
    """Whether an extracted `predicted` answer matches the `gold` answer (either may be None)."""
    _check_type(answer_type)
    if predicted is None or gold is None:
        return False
    if answer_type == "numeric":
        p, g = parse_number(predicted), parse_number(gold)
        if p is not None and g is not None:
            return numbers_close(p, g)
        pn, gn = normalize_answer(predicted), normalize_answer(gold)
        return bool(pn) and pn == gn
    if answer_type == "math":
        return math_equal(predicted, gold)
    pk, gk = answer_key(answer_type, predicted), answer_key(answer_type, gold)
    return pk is not None and pk == gk


def _math_timeout() -> int | None:
    """math-verify's timeouts use SIGALRM, which works in the main thread only (elsewhere: none)."""
    import logging
    import threading

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # not its 'timeout is disabled' warning per process
    return 5 if threading.current_thread() is threading.main_thread() else None


def _math_parse(answer: str) -> list:
    """``math_verify.parse`` of an answer (wrapped in ``$...$`` when it carries no delimiters), [] if unparsable."""
    from math_verify import parse  # lazy: sympy is slow to import and only MATH needs it

    text = answer.strip()
    if "$" not in text and "\\(" not in text and "\\[" not in text:
        text = f"${text}$"
    try:
        return list(parse(text, parsing_timeout=_math_timeout()))
    except Exception:  # noqa: BLE001 - an unparsable answer is simply not equivalent
        return []


def math_equal(predicted: str, gold: str) -> bool:
    """Competition-math equivalence: numbers compared exactly (1e-6 relative), else ``math_verify.verify``, else
    normalized strings."""
    p, g = parse_number(predicted), parse_number(gold)
    if p is not None and g is not None:
        return numbers_close(p, g)
    pn, gn = normalize_answer(predicted), normalize_answer(gold)
    if pn and pn == gn:
        return True
    gp, pp = _math_parse(gold), _math_parse(predicted)
    if not gp or not pp:
        return False
    from math_verify import verify

    try:
        return bool(verify(gp, pp, timeout_seconds=_math_timeout()))
    except Exception:  # noqa: BLE001
        return False
