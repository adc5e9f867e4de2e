"""Text-completion runs (POST /v1/completions): the playground's counterpart of a chat reply.

A run is a user message holding the prompt, with the parameters it was sent with in
`Message.run`, and one assistant message per choice (`choice_index`) holding that choice's
completion. `CompletionGeneration` is a `Generation` for /v1/completions, so resume and snapshots,
stop from any tab, checkpoints and crash recovery work as they do for chat: the generation of
choice 0 runs the request, and every other choice is a passive `CompletionGeneration` that only
buffers, publishes and saves its own text (the pacer checkpoints each one).

Log-probabilities are stored per message in the shape of `Message.logprobs`, with each token's
"offset" counted from the start of that message's text: the echoed prompt's tokens go on the
run's prompt message, the completion's on each choice. `text_offset` is what places them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

from django.db import transaction
from django.utils.translation import gettext as _

from . import llm, params
from .generation import Generation, Prompt, _pacer, user_id_for_provider
from .models import Conversation, Message, Provider

PATH = "/completions"

# Codes stored in Message.run["notes"]; the page words them (templates/conversations/playground.html).
FETCHED_WHOLE = "fetched_whole"  # best_of cannot stream
ONE_BY_ONE = "one_by_one"  # the provider returned fewer choices than n: the rest were asked for one at a time
ECHO_FETCHED = "echo_fetched"  # the stream did not echo the prompt: its tokens came from a second request
NO_ECHO = "no_echo"  # the provider did not echo the prompt


@transaction.atomic
def start_run(conversation: Conversation, prompt: str, run_params: dict) -> tuple[Message, list[Message]]:
    """Save the prompt and an empty streaming message per choice; refuse (Busy) while one streams."""
    conversation._lock()
    run = conversation.messages.create(role=Message.Role.USER, content=prompt, run={"params": run_params})
    choices = [
        conversation.messages.create(
            role=Message.Role.ASSISTANT,
            parent=run,
            status=Message.Status.STREAMING,
            model=conversation.model,
            choice_index=index,
        )
        for index in range(run_params.get("n") or 1)
    ]
    fields = {}
    if not Conversation.objects.values_list("title", flat=True).get(pk=conversation.pk):
        # The prompt's first words name it; a model is not asked to (it may not even chat).
        fields.update(title=Conversation.title_from(prompt), title_source=Conversation.TitleSource.WORDS)
    conversation._activate(choices[0], **fields)
    return run, choices


# -- reading what comes back ------------------------------------------------------------------


class Received:
    """One choice as it arrives: its raw text (echo included), its tokens placed in that text, and
    where the echoed prompt ends.

    With echo asked for, text that is still the beginning of the prompt is held back until it
    is clear whether the provider echoed the prompt (some do while streaming, llama.cpp does not).
    """

    def __init__(self, prompt: str, echo: bool):
        self.prompt = prompt
        self.raw = ""
        self.tokens: list[dict] = []  # offsets into raw
        self.echo = "pending" if echo else "no"  # then "yes" (echo_len characters) or "no"
        self.echo_len = 0
        self.released = 0  # completion characters handed out

    def take(self, text: str, tokens: list[dict]) -> str:
        """Add one piece; return the completion text it releases."""
        start = len(self.raw)
        self.raw += text
        base = None
        position = start
        for token in tokens:
            offset = token.get("offset")
            if isinstance(offset, int):
                # text_offset counts from wherever the provider starts (the prompt's start, or its
                # own output's): anchor each piece where its text begins here, then follow it.
                base = offset - start if base is None else base
                position = offset - base
            self.tokens.append({**token, "offset": position})
            position += len(token.get("token") or "")
        return self._release()

    def settle(self) -> str:
        """The answer is over: release what was held as a possible echo."""
        return self._release(final=True)

    def _release(self, final: bool = False) -> str:
        if self.echo == "pending":
            prompt = self.prompt
            if not final and len(self.raw) < len(prompt) and prompt.startswith(self.raw):
                return ""
            if prompt and self.raw.startswith(prompt):
                self.echo, self.echo_len = "yes", len(prompt)
            else:
                self.echo = "no"
        new = self.raw[self.echo_len + self.released :]
        self.released += len(new)
        return new

    @property
    def echoed_tokens(self) -> list[dict]:
        return [token for token in self.tokens if token["offset"] < self.echo_len]

    @property
    def completion_tokens(self) -> list[dict]:
        """Tokens after the echo, with offsets into the completion."""
        return [
            {**token, "offset": token["offset"] - self.echo_len}
            for token in self.tokens
            if token["offset"] >= self.echo_len
        ]


class CompletionGeneration(Generation):
    """A run: the lead (choice 0) makes the request; the other choices only buffer, publish and save."""

    def __init__(
        self, conversation: Conversation, reply: Message, run: Message, others: Sequence[Message] = (), lead=True
    ):
        super().__init__(conversation, reply)
        self.run = run
        self.lead = lead
        self.params: dict = dict((run.run or {}).get("params") or {})
        self.others = [CompletionGeneration(conversation, m, run, lead=False) for m in others] if lead else []
        self.tracks = {reply.choice_index: self, **{g.reply.choice_index: g for g in self.others}}
        self.notes: list[str] = list((run.run or {}).get("notes") or [])
        self.prompt_tokens: list[dict] | None = None  # the echoed prompt's tokens, saved on the run
        self.received = Received(run.content, bool(self.params.get("echo")))
        self.answered = False  # the provider said something about this choice
        self._provider: Provider | None = None

    # -- the request --------------------------------------------------------------------------

    async def _prepare(self) -> tuple[Provider, Prompt]:
        conversation = await Conversation.objects.select_related("provider").aget(pk=self.conversation.pk)
        self.conversation = conversation
        provider = conversation.provider
        if provider is None or not provider.enabled:
            raise llm.ProviderError(_("This conversation's provider is gone or disabled; pick another model."))
        if not self.model:
            self.model = conversation.model or provider.default_model or await self._first_model(provider)
        pacer = _pacer()
        for other in self.others:
            other.model = self.model
            pacer.add(other)  # each choice is checkpointed and kept alive on its own
        self._provider = provider
        return provider, Prompt(messages=[], context_start_id=None, text=self.run.content)

    def payload(self, prompt: Prompt) -> dict:
        try:
            checked = params.request_fields(self.params, params.COMPLETION)  # again, at send time
        except params.InvalidParams as exc:
            raise llm.ProviderError(exc.message) from None
        return {
            "model": self.model,
            "prompt": prompt.text,
            **checked,
            "user": user_id_for_provider(self.conversation.owner_id),
        }

    async def _read(self, provider: Provider, prompt: Prompt):
        payload = self.payload(prompt)
        fetch = self._stream
        if "best_of" in payload:
            self._note(FETCHED_WHOLE)  # best_of cannot stream: the whole answer comes at once
            fetch = self._fetch_whole
        try:
            await fetch(provider, payload, self.tracks)
            missing = [choice for choice in self.tracks.values() if not choice.answered]
            if missing and len(missing) < len(self.tracks):
                # The provider ignored n (llama.cpp answers with one choice): ask for each other one.
                self._note(ONE_BY_ONE)
                single = {k: v for k, v in payload.items() if k != "n"}
                for choice in missing:
                    await fetch(provider, single, {0: choice})
        finally:
            for choice in self.tracks.values():
                choice._hand_out(choice.received.settle())
            self._new_text.set()
        if self.params.get("echo"):
            await self._complete_echo(provider, prompt)

    async def _fetch_whole(self, provider: Provider, payload: dict, targets: dict[int, CompletionGeneration]):
        answer = await llm.post_json(provider, PATH, payload)
        if not isinstance(answer, dict):
            raise llm.BadResponse(_("The provider's answer is not in the OpenAI format."))
        if self._take_chunk(llm.parse_chunk(answer), targets):
            self._new_text.set()

    async def _stream(self, provider: Provider, payload: dict, targets: dict[int, CompletionGeneration]):
        pacer = _pacer()
        batches = llm.stream_batches(provider, PATH, payload)
        async with contextlib.aclosing(batches):
            async for batch in batches:
                text = False
                for chunk in batch:
                    text = self._take_chunk(chunk, targets) or text
                if text:
                    self._new_text.set()
                    if not all(choice.finish_reason for choice in targets.values()):
                        await asyncio.sleep(pacer.window)  # coalesce, as Generation._read does

    def _take_chunk(self, chunk: llm.Chunk, targets: dict[int, CompletionGeneration]) -> bool:
        if chunk.usage:
            # A request's usage goes to the first choice it was for (choice 0, or the one asked alone).
            owner = targets[min(targets)]
            owner.usage = _add_usage(owner.usage, chunk.usage)
        if chunk.model:
            self.model = chunk.model
        text = False
        for delta in chunk.choices:
            choice = targets.get(delta.index)
            if choice is None:
                continue
            choice.answered = True
            if delta.finish_reason:
                choice.finish_reason = delta.finish_reason
            if delta.content or delta.logprobs:
                text = choice._hand_out(choice.received.take(delta.content, delta.logprobs)) or text
        return text

    def _hand_out(self, text: str) -> bool:
        if not text:
            return False
        self._parts.append(text)
        if self.ttft_ms is None:
            self.ttft_ms = int((time.monotonic() - self.started) * 1000)
            self.written_at = time.monotonic()  # checkpoints count from the first text
        return True

    async def _complete_echo(self, provider: Provider, prompt: Prompt):
        """Keep the echoed prompt's tokens; if the stream did not echo them, ask for them once."""
        first = self.tracks[min(self.tracks)].received
        if first.echo == "yes":
            self.prompt_tokens = first.echoed_tokens or None
            return
        if "logprobs" not in self.params:
            self._note(NO_ECHO)
            return
        # llama.cpp's server ignores echo while streaming: one more, unstreamed, one-token request.
        request = {
            "model": self.model,
            "prompt": prompt.text,
            "echo": True,
            "logprobs": self.params["logprobs"],
            "max_tokens": 1,
            "user": user_id_for_provider(self.conversation.owner_id),
        }
        try:
            answer = await llm.post_json(provider, PATH, request)
        except llm.ProviderError:
            self._note(NO_ECHO)
            return
        probe = Received(prompt.text, echo=True)
        for delta in llm.parse_chunk(answer if isinstance(answer, dict) else {}).choices[:1]:
            probe.take(delta.content, delta.logprobs)
        probe.settle()
        self.prompt_tokens = probe.echoed_tokens or None
        self._note(ECHO_FETCHED if self.prompt_tokens else NO_ECHO)

    def _note(self, code: str):
        if code not in self.notes:
            self.notes.append(code)

    # -- publishing -----------------------------------------------------------------------------

    async def _flush(self):
        """Publish each choice's new completion text as plain-text deltas of its own message."""
        for choice in self.tracks.values():
            if not choice._parts:
                continue
            text = "".join(choice._parts)
            choice._parts.clear()
            choice._text += text
            choice.flushed = len(choice._text)
            choice.seq += 1
            await choice._publish("generation.delta", seq=choice.seq, text=text)

    async def _answer_sync(self, reply_to: str):
        """A snapshot of every choice (Generation._answer_sync answers for one)."""
        for choice in self.tracks.values():
            await self.layer.send(
                reply_to,
                {
                    "type": "generation.snapshot",
                    "message_id": choice.message_id,
                    "seq": choice.seq,
                    "content": choice._text,
                },
            )

    async def _finish(self, status: str, error: str = ""):
        if self.lead:  # the run and the other choices are saved first; choice 0 is the last word
            await Message.objects.filter(pk=self.run.pk).aupdate(
                run={"params": self.params, "notes": self.notes}, logprobs=self.prompt_tokens
            )
            for choice in self.others:
                if choice.usage is None and self.usage_estimated and self._provider is not None and choice.content:
                    # The request sent no usage: count each choice's own text (its prompt is on choice 0).
                    counted = await llm.count_tokens(self._provider, choice.content)
                    tokens = counted if counted is not None else llm.estimate_tokens(choice.content)
                    choice.usage, choice.usage_estimated = llm.Usage(0, tokens), True
                choice_status, choice_error = status, error
                if status == Message.Status.COMPLETE and not choice.content and not choice.finish_reason:
                    choice_status = Message.Status.ERROR
                    choice_error = _("The provider returned nothing for this choice.")
                await choice._finish(choice_status, choice_error)
        # Generation._finish saves extras.logprobs with the rest of the message.
        self.extras.logprobs = self.received.completion_tokens if self.received.tokens else None
        await super()._finish(status, error)


def _add_usage(total: llm.Usage | None, more: llm.Usage) -> llm.Usage:
    """Usage over several chunks that report it."""
    if total is None:
        return more
    return llm.Usage(
        (total.prompt_tokens or 0) + (more.prompt_tokens or 0),
        (total.completion_tokens or 0) + (more.completion_tokens or 0),
    )


# -- showing runs --------------------------------------------------------------------------------


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
    starts = [token.get("offset") if isinstance(token, dict) else None for token in tokens]
    if all(isinstance(s, int) for s in starts) and all(
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
    if starts is None:
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
    found = runs_of(conversation, only=[prompt_id])
    return found[0] if found else None


def last_prompt(conversation: Conversation) -> str:
    """The newest run's prompt, to start from when the page opens again."""
    latest = conversation.messages.filter(role=Message.Role.USER).order_by("-pk").values_list("content", flat=True)
    return latest.first() or ""


def busy(conversation: Conversation) -> bool:
    return conversation.messages.filter(status=Message.Status.STREAMING).exists()
