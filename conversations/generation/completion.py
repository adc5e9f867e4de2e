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

from django.utils.translation import gettext as _

from conversations import events
from conversations.generation.feeds import Opened
from conversations.generation.reply import Generation, Prompt, _pacer
from conversations.models import Conversation, Message, Provider
from conversations.providers import client as llm
from conversations.providers import params

PATH = "/completions"

# Codes stored in Message.run["notes"]; the page words them (templates/conversations/playground.html).
FETCHED_WHOLE = "fetched_whole"  # best_of cannot stream
ONE_BY_ONE = "one_by_one"  # the provider returned fewer choices than n: the rest were asked for one at a time
ECHO_FETCHED = "echo_fetched"  # the stream did not echo the prompt: its tokens came from a second request
NO_ECHO = "no_echo"  # the provider did not echo the prompt


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
            "user": llm.user_id_for_provider(self.conversation.owner_id),
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
            "user": llm.user_id_for_provider(self.conversation.owner_id),
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
            await choice._publish(events.delta(choice.message_id, choice.seq, text))

    async def _answer_sync(self, reply_to: str):
        """A snapshot of every choice (Generation._answer_sync answers for one)."""
        for choice in self.tracks.values():
            await self.layer.send(reply_to, events.snapshot(choice.message_id, choice.seq, choice._text))

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


async def open_completion(conversation: Conversation, run: Message, choices: list[Message]) -> Opened:
    """The run's generation (choice 0 leads, the others follow), listening for commands."""
    generation = CompletionGeneration(conversation, choices[0], run, choices[1:])
    await generation.open()
    return Opened([generation])
