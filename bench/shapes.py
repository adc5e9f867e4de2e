"""Bench replies made of index-coded word tokens (w0, w1, w2, ...) in the shapes real replies take.

Shared by bench/fake_llm.py, which streams piece i of a reply as one SSE event at t0 + i / rate,
and bench/stream_bench.py, which reads which token indices a page shows from the page's visible
text (`shown()`). Every piece carries exactly one token `w<i>`; what separates the tokens is the
shape's:

    para   one long paragraph: " w17" (default: the fewest tokens that make >= 5,000 characters)
    code   one ```python fence, one token per line, indented by 0/4/8 spaces (default 300 lines)
    table  a two-column Markdown table, two tokens per row (default 200 rows = 400 tokens)
    short  20 short paragraphs separated by blank lines (default 300 tokens, 15 per paragraph)

A reply is asked for with a tag in the last user message, which the fake reads:

    bench id=3-17 shape=code n=300 rate=50 framing=chunked
"""

from __future__ import annotations

import re
from functools import lru_cache

SHAPES = ("para", "code", "table", "short")
PARA_CHARS = 5000
CODE_LINES = 300
TABLE_ROWS = 200
SHORT_PARAGRAPHS = 20
SHORT_TOKENS = 300

# A token as a page shows it: "w" and its index, not inside another word or number.
TOKEN = re.compile(r"(?<![A-Za-z0-9_])w(\d+)(?![A-Za-z0-9_])")
_FIELD = re.compile(r"\b(id|shape|n|rate|framing|batch)=([\w.\-]+)")


def default_tokens(shape: str) -> int:
    """Tokens in a reply of this shape at its realistic size (see the module docstring)."""
    if shape == "para":
        size, n = 0, 0
        while size < PARA_CHARS:
            size += len(piece("para", n, n + 1))
            n += 1
        return n
    return {"code": CODE_LINES, "table": 2 * TABLE_ROWS, "short": SHORT_TOKENS}[shape]


def piece(shape: str, i: int, n: int) -> str:
    """The content of chunk i (0-based) of an n-token reply of this shape: one token and its separator."""
    word = f"w{i}"
    if shape == "para":
        return word if i == 0 else " " + word
    if shape == "code":
        line = " " * (4 * (i % 3)) + word
        text = ("```python\n" if i == 0 else "\n") + line
        return text + "\n```\n" if i == n - 1 else text
    if shape == "table":
        if i == 0:
            return "| left | right |\n| --- | --- |\n| " + word
        return f" | {word} |" if i % 2 else f"\n| {word}"
    if shape == "short":
        per = max(1, n // SHORT_PARAGRAPHS)
        if i == 0:
            return word
        return ("\n\n" if i % per == 0 else " ") + word
    raise ValueError(f"unknown shape {shape!r}")


@lru_cache(maxsize=64)
def pieces(shape: str, n: int) -> tuple[str, ...]:
    return tuple(piece(shape, i, n) for i in range(n))


def reply_text(shape: str, n: int) -> str:
    return "".join(pieces(shape, n))


def tag(bench_id: str, shape: str, n: int, rate: float, framing: str) -> str:
    """The user message that asks the fake provider for this reply."""
    return f"bench id={bench_id} shape={shape} n={n} rate={rate:g} framing={framing}"


def parse_tag(text: str) -> dict[str, str]:
    return dict(_FIELD.findall(text))


def shown(text: str) -> list[int]:
    """The token indices in a text (a page's visible text, or a saved reply), in order, repeats kept."""
    return [int(m) for m in TOKEN.findall(text)]


def judge(indices: list[int], n: int) -> dict[str, int]:
    """Holes (missing while a later one is shown), duplicates, missing at the end, out of range."""
    seen = set(indices)
    top = max(seen) if seen else -1
    return {
        "shown": len(seen),
        "holes": sum(1 for i in range(top) if i not in seen),
        "duplicates": len(indices) - len(seen),
        "missing": n - len(seen & set(range(n))),
        "foreign": len(seen - set(range(n))),
    }
