"""What a reply says besides its answer (reasoning, tool calls, log-probabilities): assembled, shown, saved.

A reply's deltas may carry `reasoning_content` or `reasoning` (kept apart from the answer), the
answer may wrap its reasoning in `<think>…</think>` (split anywhere across chunks), tool calls
arrive as fragments keyed by index, and log-probabilities come per token. `ReplyParts.feed()`
takes one choice's delta and returns the answer text in it; the rest is assembled there.
`json_view()` and `tool_call_view()` show them; `final_parts()` is what a reply saves at its end.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid

from conversations.models import Message
from conversations.providers import client as llm

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


def _held_prefix(text: str, tag: str) -> int:
    """How many characters at the end of `text` could be the start of `tag`."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0


class ThinkSplitter:
    """Split content into answer and `<think>…</think>` reasoning, whatever the chunk boundaries.

    An opening tag counts only before the answer has started (models put their reasoning first;
    an answer that mentions the tag later is left alone). A piece that may be the start of a tag
    is held back until the next chunk shows what it is. Blank text before the answer is dropped.
    """

    def __init__(self):
        self.inside = False
        self.answered = False  # some non-blank answer text has gone out
        self._held = ""

    def feed(self, text: str) -> list[tuple[bool, str]]:
        """Return (is_reasoning, text) segments, in order."""
        text = self._held + text
        self._held = ""
        segments: list[tuple[bool, str]] = []
        while text:
            if self.inside:
                at = text.find(THINK_CLOSE)
                if at < 0:
                    keep = _held_prefix(text, THINK_CLOSE)
                    self._emit(segments, True, text[: len(text) - keep])
                    self._held = text[len(text) - keep :]
                    break
                self._emit(segments, True, text[:at])
                text = text[at + len(THINK_CLOSE) :]
                self.inside = False
                continue
            if self.answered:
                self._emit(segments, False, text)
                break
            start = text.lstrip()
            if start.startswith(THINK_OPEN):
                text = start[len(THINK_OPEN) :]
                self.inside = True
                continue
            if THINK_OPEN.startswith(start):  # blank, or perhaps the start of the tag: wait for more
                self._held = start
                break
            self._emit(segments, False, start)
            break
        return segments

    def flush(self) -> list[tuple[bool, str]]:
        """The end of the content: what was held back is whatever it looked like."""
        held, self._held = self._held, ""
        segments: list[tuple[bool, str]] = []
        self._emit(segments, self.inside, held)
        return segments

    def _emit(self, segments: list, reasoning: bool, text: str):
        if text:
            segments.append((reasoning, text))
            if not reasoning and text.strip():
                self.answered = True


def split_orphan_think(content: str) -> tuple[str, str]:
    """Reasoning and answer of a reply whose template opened `<think>` itself (only `</think>` came)."""
    before, tag, after = content.partition(THINK_CLOSE)
    if not tag or THINK_OPEN in before:
        return "", content
    return before.strip(), after.lstrip()


class ReplyParts:
    """The reasoning, tool calls and log-probabilities of one choice, assembled from its deltas.

    Continuing a reply starts from what it already has (`reasoning`, `logprobs`, `answered`).
    `version` changes whenever the reasoning or the tool calls do (for live updates).
    """

    def __init__(
        self,
        *,
        reasoning: str = "",
        reasoning_ms: int | None = None,
        logprobs: list | None = None,
        answered: bool = False,
    ):
        # Pieces are joined only when read (a live update, a checkpoint, the end), not per chunk.
        self._reasoning = [reasoning] if reasoning else []
        self._reasoning_ms = reasoning_ms or 0
        self._thinking_since: float | None = None
        self._calls: dict[int, dict] = {}  # index -> {"id", "type", "name", "arguments": [pieces]}
        self._size = len(reasoning)
        self.logprobs: list[dict] | None = list(logprobs) if logprobs else None
        self._base_reasoning = len(reasoning)
        self._think = ThinkSplitter()
        self._think.answered = answered  # a continued answer goes on as it is, spaces included
        self.version = 0
        self.received = False  # anything at all arrived for this choice

    def feed(self, choice: llm.ChoiceDelta) -> str:
        """Take one delta; return its answer text."""
        self.received = True
        answer = []
        if choice.reasoning:
            self._add_reasoning(choice.reasoning)
        if choice.content:
            for reasoning, text in self._think.feed(choice.content):
                if reasoning:
                    self._add_reasoning(text)
                else:
                    answer.append(text)
        for call in choice.tool_calls:
            self._add_tool_call(call)
        if choice.logprobs:
            if self.logprobs is None:
                self.logprobs = []
            self.logprobs.extend(choice.logprobs)
        if answer or choice.tool_calls:
            self._stop_thinking()
        return "".join(answer)

    def finish(self) -> str:
        """The end of the stream: return any answer text held back, close the reasoning timer."""
        answer = []
        for reasoning, text in self._think.flush():
            if reasoning:
                self._add_reasoning(text)
            else:
                answer.append(text)
        self._stop_thinking()
        for call in self._calls.values():
            if not call["id"]:
                call["id"] = f"call_{uuid.uuid4().hex[:24]}"  # a result must be able to name its call
        return "".join(answer)

    @property
    def reasoning(self) -> str:
        if len(self._reasoning) > 1:
            self._reasoning[:] = ["".join(self._reasoning)]
        return self._reasoning[0] if self._reasoning else ""

    @property
    def tool_calls(self) -> list[dict]:
        """The calls so far in the API's format, in index order."""
        calls = []
        for index in sorted(self._calls):
            call = self._calls[index]
            if len(call["arguments"]) > 1:
                call["arguments"][:] = ["".join(call["arguments"])]
            arguments = call["arguments"][0] if call["arguments"] else ""
            calls.append(
                {"id": call["id"], "type": call["type"], "function": {"name": call["name"], "arguments": arguments}}
            )
        return calls

    @property
    def reasoning_ms(self) -> int | None:
        ms = self._reasoning_ms
        if self._thinking_since is not None:
            ms += int((time.monotonic() - self._thinking_since) * 1000)
        return ms if self._reasoning else None

    @property
    def thinking(self) -> bool:
        """Reasoning has come and the answer (or a tool call) has not yet."""
        return self._thinking_since is not None

    def new_text(self) -> str:
        """Reasoning and tool calls generated by this request (for counting its tokens)."""
        calls = "".join(c["function"]["name"] + c["function"]["arguments"] for c in self.tool_calls)
        return self.reasoning[self._base_reasoning :] + calls

    @property
    def size(self) -> int:
        """Grows with every change worth a checkpoint (reasoning and tool calls received)."""
        return self._size

    def _add_reasoning(self, text: str):
        if not text:
            return
        if self._thinking_since is None:
            self._thinking_since = time.monotonic()
        self._reasoning.append(text)
        self._size += len(text)
        self.version += 1

    def _stop_thinking(self):
        if self._thinking_since is not None:
            self._reasoning_ms += int((time.monotonic() - self._thinking_since) * 1000)
            self._thinking_since = None

    def _add_tool_call(self, delta: llm.ToolCallDelta):
        call = self._calls.get(delta.index)
        if call is None:
            call = self._calls[delta.index] = {"id": "", "type": "function", "name": "", "arguments": []}
        if delta.id:
            call["id"] = delta.id
        if delta.type:
            call["type"] = delta.type
        if delta.name and call["name"] != delta.name:  # some providers repeat the whole name
            call["name"] += delta.name
        if delta.arguments:
            call["arguments"].append(delta.arguments)
        self._size += len(delta.name) + len(delta.arguments) + 1
        self.version += 1


# --- Display ----------------------------------------------------------------------------------


def json_view(text: str) -> dict:
    """Pretty-printed JSON, or what is wrong with it."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        return {"valid": False, "text": text, "error": str(exc)}
    return {"valid": True, "text": json.dumps(value, indent=2, ensure_ascii=False), "error": ""}


def tool_call_view(call: dict) -> dict:
    function = call.get("function") or {}
    arguments = function.get("arguments") or ""
    view = json_view(arguments) if arguments.strip() else {"valid": True, "text": "", "error": ""}
    return {"id": call.get("id") or "", "name": function.get("name") or "", "arguments": view}


# --- The end of a reply ---------------------------------------------------------------------


@dataclasses.dataclass
class FinalParts:
    content: str
    reasoning: str
    reasoning_ms: int | None
    tool_calls: list | None
    logprobs: list | None
    prompt_tokens: int | None
    completion_tokens: int | None
    usage_estimated: bool


def _add(before: int | None, now: int | None) -> int | None:
    return None if before is None and now is None else (before or 0) + (now or 0)


def final_parts(
    extras: ReplyParts,
    content: str,
    usage: llm.Usage | None,
    usage_estimated: bool,
    continued: Message | None = None,
) -> FinalParts:
    """What a reply saves at its end; a continuation (`continued`: the reply as it was) adds to what it had."""
    content += extras.finish()  # text held back when the stream ended without a finish reason
    reasoning = extras.reasoning
    if not reasoning:
        reasoning, content = split_orphan_think(content)
    usage = usage or llm.Usage()
    prompt_tokens, completion_tokens = usage.prompt_tokens, usage.completion_tokens
    tool_calls = extras.tool_calls or None
    if continued is not None:
        prompt_tokens = _add(continued.prompt_tokens, prompt_tokens)
        completion_tokens = _add(continued.completion_tokens, completion_tokens)
        usage_estimated = usage_estimated or continued.usage_estimated
        tool_calls = tool_calls or continued.tool_calls
    return FinalParts(
        content=content,
        reasoning=reasoning,
        reasoning_ms=extras.reasoning_ms if extras.reasoning else None,
        tool_calls=tool_calls,
        logprobs=extras.logprobs,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        usage_estimated=usage_estimated,
    )
