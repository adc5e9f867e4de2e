"""A playground's runs as the page shows them: each prompt with its choices, cut into tokens by their offsets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from conversations.generation.completion import NO_ECHO
from conversations.models import Conversation, Message


@dataclass
class Piece:
    """A stretch of shown text: one token (with its log-probability and alternatives) or plain text."""

    text: str
    start: int
    logprob: float | None = None
    top: list | None = None
    is_token: bool = False


def _starts(text: str, tokens: list) -> list[int] | None:
    """Where each token begins in `text`: its offset, else (offsets unusable) the token strings' lengths."""
    offsets = [token.get("offset") if isinstance(token, dict) else None for token in tokens]
    starts: list[int] = [s for s in offsets if isinstance(s, int)]
    if len(starts) == len(offsets) and all(
        0 <= a <= b <= len(text) for a, b in zip(starts, starts[1:] + [len(text)], strict=True)
    ):
        return starts
    strings = [str(token.get("token", "")) if isinstance(token, dict) else "" for token in tokens]
    if "".join(strings) != text:
        return None
    starts, position = [], 0
    for string in strings:
        starts.append(position)
        position += len(string)
    return starts


def pieces(text: str, tokens: list | None) -> list[Piece]:
    """Cut `text` into its tokens by their offsets (text_offset), so the page shows exactly `text`.

    Text no token covers is a plain piece; offsets that do not fit the text fall back to the
    token strings when they spell it, else the whole text is shown plain.
    """
    starts = _starts(text, tokens) if tokens else None
    if starts is None or not tokens:
        return [Piece(text, 0)] if text else []
    result, cursor = [], 0
    for i, token in enumerate(tokens):
        start = max(starts[i], cursor)
        end = starts[i + 1] if i + 1 < len(tokens) else min(len(text), start + len(str(token.get("token", ""))))
        if start > cursor:
            result.append(Piece(text[cursor:start], cursor))
        if end > start:
            result.append(Piece(text[start:end], start, token.get("logprob"), token.get("top"), is_token=True))
            cursor = end
    if cursor < len(text):
        result.append(Piece(text[cursor:], cursor))
    return result


def shown_tokens(text: str, tokens: list | None) -> list[dict] | None:
    """`tokens` as templates/conversations/_logprobs.html shows them: each one's text cut from `text`
    at its text_offset (text no token covers shows as a token without a probability)."""
    if not tokens:
        return None
    return [
        {"token": piece.text, "logprob": piece.logprob, "top": piece.top or [], "offset": piece.start}
        for piece in pieces(text, tokens)
    ]


@dataclass
class Run:
    prompt: Message
    choices: list[Message]

    @property
    def params(self) -> dict:
        return (self.prompt.run or {}).get("params") or {}

    @property
    def notes(self) -> list[str]:
        return (self.prompt.run or {}).get("notes") or []

    @property
    def is_streaming(self) -> bool:
        return any(c.is_streaming for c in self.choices)

    @property
    def fetched_whole(self) -> bool:
        return "best_of" in self.params

    @property
    def suffix(self) -> str:
        return self.params.get("suffix") or ""

    @property
    def echoed(self) -> bool:
        return bool(self.params.get("echo")) and NO_ECHO not in self.notes

    @property
    def prompt_tokens(self) -> list[dict] | None:
        return shown_tokens(self.prompt.content, self.prompt.logprobs)

    @property
    def dom_id(self) -> str:
        return f"run-{self.prompt.pk}"

    @property
    def settings(self) -> list[tuple[str, str]]:
        """The parameters it was sent with, as (name, value) for the page."""
        shown = []
        for name, value in self.params.items():
            if name == "suffix":
                continue
            if isinstance(value, bool):
                value = "true" if value else "false"
            elif isinstance(value, list | dict):
                value = ", ".join(repr(v) for v in value) if isinstance(value, list) else str(value)
            shown.append((name, str(value)))
        return shown


def runs_of(conversation: Conversation, only: Sequence[int] | None = None) -> list[Run]:
    """The conversation's runs, oldest first (or only those whose prompt ids are in `only`)."""
    messages = conversation.messages.order_by("pk")
    if only is not None:
        messages = messages.filter(pk__in=only) | conversation.messages.filter(parent_id__in=only)
        messages = messages.order_by("pk")
    runs: dict[int, Run] = {}
    for message in messages:
        if message.role == Message.Role.USER:
            runs[message.pk] = Run(message, [])
        elif message.parent_id in runs:
            runs[message.parent_id].choices.append(message)
    for run in runs.values():
        run.choices.sort(key=lambda m: m.choice_index)
        for choice in run.choices:
            choice.shown_tokens = shown_tokens(choice.content, choice.logprobs)
    return list(runs.values())


def run_of(conversation: Conversation, message_id: int) -> Run | None:
    """The run a message (its prompt or one of its choices) belongs to."""
    message = conversation.messages.filter(pk=message_id).only("pk", "parent_id", "role").first()
    if message is None:
        return None
    prompt_id = message.pk if message.role == Message.Role.USER else message.parent_id
    if prompt_id is None:  # a choice without its prompt: no run (`pk__in=[None]` would match nothing)
        return None
    found = runs_of(conversation, only=[prompt_id])
    return found[0] if found else None


def last_prompt(conversation: Conversation) -> str:
    """The newest run's prompt, to start from when the page opens again."""
    latest = conversation.messages.filter(role=Message.Role.USER).order_by("-pk").values_list("content", flat=True)
    return latest.first() or ""


def busy(conversation: Conversation) -> bool:
    return conversation.messages.filter(status=Message.Status.STREAMING).exists()
