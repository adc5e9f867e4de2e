"""The /v1/completions feed (the playground): one run's request(s), feeding one plain-text reply per choice.

A run is a user message holding the prompt, with the parameters it was sent with in
`Message.run`, and one assistant message per choice (`choice_index`) holding that choice's
completion. Each choice is a plain-text `Reply` (reply.py), so resume and snapshots, stop from
any tab, checkpoints and crash recovery work as they do for chat. The feed makes the request(s):
best_of is fetched whole (it cannot stream), a provider that ignores n (llama.cpp) is asked for
each missing choice in a request of its own, and an echo the stream left out is fetched with one
more request. The run's notes say which of these happened.

Log-probabilities are stored per message in the shape of `Message.logprobs`, with each token's
"offset" counted from the start of that message's text: the echoed prompt's tokens go on the
run's prompt message, the completion's on each choice. `text_offset` is what places them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from django.utils.translation import gettext as _

from conversations.generation import pacer, running
from conversations.generation.control import Control
from conversations.generation.prompt import model_to_ask, tokens_in, usable_provider
from conversations.generation.reply import Reply
from conversations.models import Conversation, Message, Provider
from conversations.providers import client as llm
from conversations.providers import params

log = logging.getLogger(__name__)

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


@dataclass
class Choice:
    """One choice of the run: its reply, what came for it, and whether the provider answered for it at all."""

    reply: Reply
    received: Received
    answered: bool = False


async def open_completion(conversation: Conversation, run: Message, choices: list[Message]) -> CompletionFeed:
    """The run's feed, listening for commands (stop, sync): announce the choices, then start() it."""
    feed = CompletionFeed(conversation, run, choices)
    await feed.open()
    return feed


class CompletionFeed:
    """One run: its request(s) to /v1/completions and a plain-text reply per choice.

    Choice 0 leads: it is saved last (the run's last word), and a request's usage, the model the
    provider names and the empty-answer check are its own.
    """

    def __init__(self, conversation: Conversation, run: Message, choices: list[Message]):
        self.conversation = conversation
        self.run = run
        self.params: dict[str, Any] = dict((run.run or {}).get("params") or {})
        self.notes: list[str] = list((run.run or {}).get("notes") or [])
        self.prompt_tokens: list[dict[str, Any]] | None = None  # the echoed prompt's tokens, saved on the run
        echo = bool(self.params.get("echo"))
        self.choices = {
            message.choice_index: Choice(Reply(conversation, message, plain=True), Received(run.content, echo))
            for message in choices
        }
        self.lead = self.choices[choices[0].choice_index]
        self.model = choices[0].model
        self.stopping = False
        self.task: asyncio.Task[None] | None = None
        self.control = Control(conversation.control_group_name, stop=self.stop, sync=self._answer_sync)
        self._pacer = pacer.current()
        self._provider: Provider | None = None
        self._reader: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Listen for commands, before anyone is told the run exists (so no sync is lost)."""
        await self.control.open()

    def start(self) -> asyncio.Task[None]:
        self.task = running.start(self, self._run(), name=f"generation-{self.lead.reply.message_id}")
        return self.task

    def stop(self) -> None:
        """Stop every choice: cancel the request(s)."""
        self.stopping = True
        if self._reader is not None:
            self._reader.cancel()  # closes the upstream connection

    async def _answer_sync(self, reply_to: str) -> None:
        """A snapshot of every choice of the run."""
        for choice in self.choices.values():
            await choice.reply.answer_sync(reply_to)

    # -- the run --------------------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            if not self.control.opened:
                await self.control.open()
            await self._generate()
        finally:
            for choice in self.choices.values():
                self._pacer.remove(choice.reply)
            await self.control.close()

    async def _generate(self) -> None:
        lead = self.lead.reply
        for choice in self.choices.values():
            self._pacer.add(choice.reply)  # each choice is checkpointed and kept alive on its own
        try:
            try:
                provider = await self._prepare()
            except llm.ProviderError as exc:
                await self._finish(Message.Status.ERROR, exc.user_message)
                return
            if self.stopping:
                await self._finish(Message.Status.STOPPED)
                return
            for choice in self.choices.values():
                choice.reply.start()
            self._reader = asyncio.create_task(self._read(provider))
            try:
                await self._reader
                status, error = Message.Status.COMPLETE, ""
            except asyncio.CancelledError:
                if not self.stopping:
                    raise
                status, error = Message.Status.STOPPED, ""
            except llm.ProviderError as exc:
                log.info("Generation %s failed: %s (%s)", lead.message_id, exc.kind, exc.message)
                status, error = Message.Status.ERROR, exc.user_message
                if isinstance(exc, llm.StreamInterrupted):
                    status = Message.Status.INTERRUPTED
            finally:
                for choice in self.choices.values():
                    choice.reply.close()
            for choice in self.choices.values():
                await choice.reply.drained()  # each publishes what is left, in order
            if status == Message.Status.COMPLETE and not lead.content and not lead.finish_reason:
                status, error = Message.Status.ERROR, _("The provider finished without saying anything.")
            await self._count_usage(provider)
            await self._finish(status, error)
        except Exception as exc:
            log.exception("Generation %s crashed", lead.message_id)
            await self._finish(
                Message.Status.ERROR, _("Internal error while generating: %(error)s") % {"error": type(exc).__name__}
            )

    async def _prepare(self) -> Provider:
        conversation = await Conversation.objects.select_related("provider").aget(pk=self.conversation.pk)
        self.conversation = conversation
        for choice in self.choices.values():
            choice.reply.conversation = conversation
        provider = usable_provider(conversation)
        self.model = await model_to_ask(conversation, provider, self.model)
        for choice in self.choices.values():
            choice.reply.model = self.model
        self._provider = provider
        return provider

    async def _count_usage(self, provider: Provider) -> None:
        """The lead's usage, counted if the provider did not report it (the others' at the end)."""
        lead = self.lead.reply
        if lead.usage and lead.usage.completion_tokens is not None:
            return
        text = lead.generated_text()
        prompt_tokens = await tokens_in(provider, self.run.content)
        lead.usage = llm.Usage(prompt_tokens, await tokens_in(provider, text) if text else 0)
        lead.usage_estimated = True

    async def _finish(self, status: str, error: str = "") -> None:
        """The run and the other choices are saved first; choice 0 is the last word."""
        await Message.objects.filter(pk=self.run.pk).aupdate(
            run={"params": self.params, "notes": self.notes}, logprobs=self.prompt_tokens
        )
        lead = self.lead.reply
        for choice in self.choices.values():
            if choice is self.lead:
                continue
            reply = choice.reply
            if reply.usage is None and lead.usage_estimated and self._provider is not None and reply.content:
                # The request sent no usage: count each choice's own text (its prompt is on choice 0).
                reply.usage = llm.Usage(0, await tokens_in(self._provider, reply.content))
                reply.usage_estimated = True
            choice_status, choice_error = status, error
            if status == Message.Status.COMPLETE and not reply.content and not reply.finish_reason:
                choice_status = Message.Status.ERROR
                choice_error = _("The provider returned nothing for this choice.")
            await self._end(choice, choice_status, choice_error)
        await self._end(self.lead, status, error)

    async def _end(self, choice: Choice, status: str, error: str) -> None:
        self._pacer.remove(choice.reply)  # no checkpoint after this
        received = choice.received
        choice.reply.extras.logprobs = received.completion_tokens if received.tokens else None
        await choice.reply.finish(status, error)

    # -- the request(s) ---------------------------------------------------------------------------------

    def _payload(self) -> dict[str, Any]:
        try:
            checked = params.request_fields(self.params, params.COMPLETION)  # again, at send time
        except params.InvalidParams as exc:
            raise llm.ProviderError(exc.message) from None
        return {
            "model": self.model,
            "prompt": self.run.content,
            **checked,
            "user": llm.user_id_for_provider(self.conversation.owner_id),
        }

    async def _read(self, provider: Provider) -> None:
        payload = self._payload()
        fetch = self._stream
        if "best_of" in payload:
            self._note(FETCHED_WHOLE)  # best_of cannot stream: the whole answer comes at once
            fetch = self._fetch_whole
        try:
            await fetch(provider, payload, self.choices)
            missing = [choice for choice in self.choices.values() if not choice.answered]
            if missing and len(missing) < len(self.choices):
                # The provider ignored n (llama.cpp answers with one choice): ask for each other one.
                self._note(ONE_BY_ONE)
                single = {k: v for k, v in payload.items() if k != "n"}
                for choice in missing:
                    await fetch(provider, single, {0: choice})
        finally:
            for choice in self.choices.values():
                choice.reply.add_text(choice.received.settle())
        if self.params.get("echo"):
            await self._complete_echo(provider)

    async def _fetch_whole(self, provider: Provider, payload: dict[str, Any], targets: dict[int, Choice]) -> None:
        answer = await llm.post_json(provider, PATH, payload)
        if not isinstance(answer, dict):
            raise llm.BadResponse(_("The provider's answer is not in the OpenAI format."))
        self._take_chunk(llm.parse_chunk(answer), targets)

    async def _stream(self, provider: Provider, payload: dict[str, Any], targets: dict[int, Choice]) -> None:
        # Read as fast as the provider sends: each reply's flusher coalesces its deltas (reply.py).
        batches = llm.stream_batches(provider, PATH, payload)
        async with contextlib.aclosing(batches):
            async for batch in batches:
                for chunk in batch:
                    self._take_chunk(chunk, targets)

    def _take_chunk(self, chunk: llm.Chunk, targets: dict[int, Choice]) -> bool:
        """Hand each choice its text; True if any choice got some."""
        if chunk.usage:
            # A request's usage goes to the first choice it was for (choice 0, or the one asked alone).
            owner = targets[min(targets)].reply
            owner.usage = _add_usage(owner.usage, chunk.usage)
        if chunk.model:
            self.model = self.lead.reply.model = chunk.model
        text = False
        for delta in chunk.choices:
            choice = targets.get(delta.index)
            if choice is None:
                continue
            choice.answered = True
            if delta.finish_reason:
                choice.reply.finish_reason = delta.finish_reason
            if delta.content or delta.logprobs:
                text = choice.reply.add_text(choice.received.take(delta.content, delta.logprobs)) or text
        return text

    async def _complete_echo(self, provider: Provider) -> None:
        """Keep the echoed prompt's tokens; if the stream did not echo them, ask for them once."""
        first = self.choices[min(self.choices)].received
        if first.echo == "yes":
            self.prompt_tokens = first.echoed_tokens or None
            return
        if "logprobs" not in self.params:
            self._note(NO_ECHO)
            return
        # llama.cpp's server ignores echo while streaming: one more, unstreamed, one-token request.
        request = {
            "model": self.model,
            "prompt": self.run.content,
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
        probe = Received(self.run.content, echo=True)
        for delta in llm.parse_chunk(answer if isinstance(answer, dict) else {}).choices[:1]:
            probe.take(delta.content, delta.logprobs)
        probe.settle()
        self.prompt_tokens = probe.echoed_tokens or None
        self._note(ECHO_FETCHED if self.prompt_tokens else NO_ECHO)

    def _note(self, code: str) -> None:
        if code not in self.notes:
            self.notes.append(code)


def _add_usage(total: llm.Usage | None, more: llm.Usage) -> llm.Usage:
    """Usage over several chunks that report it."""
    if total is None:
        return more
    return llm.Usage(
        (total.prompt_tokens or 0) + (more.prompt_tokens or 0),
        (total.completion_tokens or 0) + (more.completion_tokens or 0),
    )
