"""Final-answer extraction and comparison (numbers, normalized text, LaTeX boxed answers)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction

_NUMBER = r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|-?\.\d+"
_NUMBER_RE = re.compile(rf"(?<![\w.])(?:{_NUMBER})(?:\s*/\s*(?:\d+))?")
_HASH_RE = re.compile(r"####\s*([^\n]+)")
_ANSWER_RE = re.compile(r"(?im)(?:^|\b)(?:final\s+answer|answer)\s*(?:is\s*:?|:|：)\s*([^\n]+?)\s*$")
_TEXT_WRAP_RE = re.compile(r"\\(?:text|textbf|mathrm|mathbf|operatorname)\s*\{([^{}]*)\}")
_FRAC_RE = re.compile(r"^(-?)\\[dt]?frac\s*\{([^{}]+)\}\s*\{([^{}]+)\}$")

EXTRACT_MODES = ("auto", "boxed", "hash", "answer", "last_number", "full")


@dataclass(frozen=True)
class Extracted:
    text: str
    method: str


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), balanced braces included."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    brace = text.find("{", start)
    if brace < 0:
        return None
    depth = 0
    for i in range(brace, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[brace + 1 : i]
    return None


def last_number(text: str) -> str | None:
    found = _NUMBER_RE.findall(text)
    return found[-1] if found else None


def extract_answer(text: str, mode: str = "auto") -> Extracted | None:
    """The final answer in a model's output, trying boxed → ``####`` → ``Answer:`` → last number."""
    if mode not in EXTRACT_MODES:
        raise ValueError(f"unknown extract mode {mode!r}; choose one of {', '.join(EXTRACT_MODES)}")
    if mode == "full":
        return Extracted(text.strip(), "full") if text.strip() else None
    tries = [mode] if mode != "auto" else ["boxed", "hash", "answer", "last_number"]
    for method in tries:
        found = _extract_one(text, method)
        if found is not None and found.strip():
            return Extracted(_clean(found), method)
    return None


def _extract_one(text: str, method: str) -> str | None:
    if method == "boxed":
        return last_boxed(text)
    if method == "hash":
        matches = _HASH_RE.findall(text)
        return matches[-1] if matches else None
    if method == "answer":
        matches = _ANSWER_RE.findall(text)
        return matches[-1] if matches else None
    return last_number(text)


def _clean(answer: str) -> str:
    s = answer.strip()
    boxed = last_boxed(s)
    if boxed is not None:
        s = boxed
    s = s.strip().strip("$").strip()
    s = s.rstrip(".").strip()
    return s


def to_number(value: object) -> float | None:
    """Parse ``42``, ``-3.5``, ``1,234``, ``$5``, ``50%``, ``3/4``, ``\\frac{3}{4}``; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str):
        return None
    s = _TEXT_WRAP_RE.sub(r"\1", value).strip()
    s = s.replace("\\$", "").replace("$", "").replace("\\!", "").replace("\\,", "").replace(" ", "")
    s = s.rstrip(".").removesuffix("\\%").removesuffix("%")
    frac = _FRAC_RE.match(s)
    if frac:
        s = f"{frac.group(1)}{frac.group(2)}/{frac.group(3)}"
    if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", s):
        s = s.replace(",", "")
    try:
        if "/" in s:
            return float(Fraction(s))
        result = float(s)
    except (ValueError, ZeroDivisionError):
        return None
    return result if math.isfinite(result) else None


def normalize_text(value: object) -> str:
    """Lowercase, unwrap ``\\text{}``, collapse whitespace, strip outer quotes/punctuation/parens."""
    s = _TEXT_WRAP_RE.sub(r"\1", str(value))
    s = s.replace("\\left", "").replace("\\right", "")
    s = " ".join(s.lower().split())
    s = s.strip(" \t\"'`$.,;:!?")
    if len(s) >= 2 and s[0] in "([" and s[-1] in ")]" and s.count(s[0]) == 1:
        s = s[1:-1].strip()
    return s


def answers_match(
    predicted: str, truth: object, *, rel_tol: float = 1e-6, abs_tol: float = 1e-9
) -> tuple[bool, str]:
    """Compare an extracted answer with one ground truth; returns (match, how it was compared)."""
    truth_num = to_number(truth)
    if truth_num is not None:
        pred_num = to_number(predicted)
        if pred_num is None:
            inner = last_number(predicted)
            pred_num = to_number(inner) if inner is not None else None
        if pred_num is not None:
            return math.isclose(pred_num, truth_num, rel_tol=rel_tol, abs_tol=abs_tol), "numeric"
    truth_text = last_boxed(truth) if isinstance(truth, str) and "\\boxed" in truth else truth
    return normalize_text(predicted) == normalize_text(truth_text), "text"
