"""What reading a reply's parts costs per chunk (issue 4: reasoning, think tags, tool calls, logprobs).

    .venv/bin/python bench/reply_parts_bench.py            # 200,000 chunks of each kind
    .venv/bin/python bench/reply_parts_bench.py --chunks 50000

Every chunk a generation reads goes through llm.parse_chunk and then ReplyParts.feed (the think-tag
splitter, reasoning, tool-call assembly, logprobs). This times both, per chunk, in this process,
for plain text, reasoning deltas, <think> content, tool-call fragments and text with logprobs.
"""

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")

import django  # noqa: E402

django.setup()

from conversations.generation.parts import ReplyParts  # noqa: E402
from conversations.providers import client as llm  # noqa: E402


def raw(delta: dict, logprobs=None) -> dict:
    choice = {"index": 0, "delta": delta, "finish_reason": None}
    if logprobs is not None:
        choice["logprobs"] = logprobs
    return {"id": "chatcmpl-b", "object": "chat.completion.chunk", "model": "m", "choices": [choice]}


KINDS = {
    "text": lambda i: raw({"content": "word "}),
    "reasoning": lambda i: raw({"reasoning_content": "step "}),
    "think tags": lambda i: raw({"content": "<think>" if i == 0 else "step "}),
    "tool call": lambda i: raw(
        {
            "tool_calls": [
                {"index": 0, "id": "c", "function": {"name": "f", "arguments": "{"}}
                if i == 0
                else {"index": 0, "function": {"arguments": '"a",'}}
            ]
        }
    ),
    "text + logprobs (top 5)": lambda i: raw(
        {"content": "word "},
        {
            "content": [
                {
                    "token": "word ",
                    "logprob": -0.1,
                    "top_logprobs": [{"token": f"t{k}", "logprob": -k} for k in range(5)],
                }
            ]
        },
    ),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=200_000)
    args = parser.parse_args()
    n = args.chunks
    print(f"{'kind':<26}{'parse_chunk us':>16}{'ReplyParts.feed us':>20}")
    for name, make in KINDS.items():
        objs = [make(i) for i in range(min(n, 2))]
        objs += [objs[-1]] * (n - len(objs))
        start = time.perf_counter()
        chunks = [llm.parse_chunk(obj) for obj in objs]
        parsed = time.perf_counter()
        parts = ReplyParts()
        for chunk in chunks:
            parts.feed(chunk.choices[0])
        fed = time.perf_counter()
        print(f"{name:<26}{1e6 * (parsed - start) / n:>16.2f}{1e6 * (fed - parsed) / n:>20.2f}")


if __name__ == "__main__":
    main()
