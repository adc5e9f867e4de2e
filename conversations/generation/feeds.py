"""Where a chat reply's text comes from: one upstream request for 1..n replies, or one request per reply.

`open_chat()` makes a `ChatFeed` for the replies of one message: one reply, or n > 1 choices
(assistant messages under the same parent, `choice_index` 0..n-1, `choices_open` until the user
picks) streamed side by side. The feed builds the prompt once, sends the request and routes each
chunk's choices by index to their `Reply` (reply.py), which publishes, checkpoints and saves its
own text. Each reply ends as soon as its choice is received.

Some providers (the bundled llama-cpp-python server among them) answer n > 1 with one choice.
Then the feed asks n times itself (varying the seed, if one is set, so the choices differ) and
marks the choices `own_request`, which the page says. Such a provider is known up front (the
bundled one), found out from an answer that brought only choice 0 (then the missing choices are
asked for at once), or from a 400 that names `n`; it is remembered for the next time.

The feed listens on the conversation's control group (control.py): a stop from any tab or
process cancels the upstream request(s) and stops every reply of the feed; a sync is answered
with a snapshot of each reply still streaming.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any

from django.core.cache import cache
from django.utils import timezone
from django.utils.translation import gettext as _

from chatsite.db import database_sync_to_async
from conversations import events
from conversations.generation import pacer, running
from conversations.generation.control import Control
from conversations.generation.prompt import (
    Prompt,
    asks_for_json,
    build_prompt,
    continuation_prompt,
    model_to_ask,
    tokens_in,
    usable_provider,
)
from conversations.generation.reply import Reply
from conversations.models import Conversation, Message, Provider
from conversations.providers import client as llm
from conversations.providers.params import InvalidParams, request_fields

log = logging.getLogger(__name__)

SINGLE_CHOICE_SECONDS = 24 * 3600  # how long a provider is remembered to ignore n

_single_choice: set[tuple[int, str]] = set()


def reset_for_tests() -> None:
    """Forget the providers this process found to ignore n (the cache remembers them too)."""
    _single_choice.clear()


def streaming_ids(branch: list[Message]) -> list[int]:
    """The replies still streaming on a branch, open choices included."""
    ids: list[int] = []
    for message in branch:
        for candidate in getattr(message, "open_choices", []) or [message]:
            if candidate.is_streaming and candidate.pk not in ids:
                ids.append(candidate.pk)
    return ids


@dataclasses.dataclass
class Reading:
    """What a feed reads from the database before it asks: one trip to the database thread."""

    conversation: Conversation  # as it is now, with its provider
    branch: list[Message]  # the branch to the replies' parent, oldest first
    context_length: int | None  # the model's context window (None: the model is not known yet)


def read_for(conversation_pk: int, lead: Message) -> Reading:
    """The Reading for replies like `lead` (sync: call it in the same trip as the work that made them)."""
    conversation = Conversation.objects.select_related("provider").get(pk=conversation_pk)
    provider = conversation.provider
    model = lead.model or conversation.model or (provider.default_model if provider else "")
    return Reading(
        conversation,
        conversation.branch_to(lead.parent_id),
        provider.context_length_for(model) if provider and model else None,
    )


async def open_chat(
    conversation: Conversation, replies: list[Message], *, continuing: bool = False, reading: Reading | None = None
) -> ChatFeed:
    """A feed for these replies, listening for commands (stop, sync) but not streaming yet.

    Announce the replies, then start() it: every delta of theirs comes after the announcement. Or
    start(announced=False) first, so the provider is asked while the announcement is made, and
    call announced() once it is: the replies publish nothing before that. `reading`, when the
    caller read it in the same trip to the database as the replies were made, saves a trip.
    """
    feed = ChatFeed(conversation, replies, continuing=continuing, reading=reading)
    await feed.open()
    return feed


async def read_stream(provider: Provider, payload: dict[str, Any], routes: Mapping[int, Reply]) -> llm.Usage | None:
    """Stream one request, handing each choice's deltas to the reply `routes` has for its index.

    Returns the request's usage, if the provider sent it. It reads as fast as the provider sends
    (a reader that paused after each read took one HTTP chunk per pause from a provider speaking
    chunked HTTP, as real ones do, and fell seconds behind under load); each reply's flusher
    coalesces what arrives within the pacer's window into one delta (reply.py).
    """
    usage = None
    batches = llm.stream_batches(provider, "/chat/completions", payload)
    # aclosing: a stop that lands while the reader waits still closes the upstream request.
    async with contextlib.aclosing(batches):
        async for batch in batches:
            changed: dict[int, Reply] = {}
            for chunk in batch:
                if chunk.usage:
                    usage = chunk.usage
                for choice in chunk.choices:
                    reply = routes.get(choice.index)
                    if reply is not None and reply.take(choice, chunk.model):
                        changed[reply.message_id] = reply
            for reply in changed.values():
                await reply.send_extras(force=bool(reply.finish_reason))
    return usage


def split_usage(total: int, weights: list[int]) -> list[int]:
    """Whole shares of `total` in proportion to `weights`, adding up to `total` exactly."""
    weights = [max(w, 1) for w in weights]
    exact = [total * w / sum(weights) for w in weights]
    shares = [int(x) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: exact[i] - shares[i], reverse=True)
    for i in by_remainder[: total - sum(shares)]:
        shares[i] += 1
    return shares


async def _knows_single_choice(provider: Provider) -> bool:
    key = (provider.pk, provider.endpoint)
    if provider.is_bundled or key in _single_choice:
        return True
    return bool(await cache.aget(f"llm:single-choice:{provider.pk}:{provider.endpoint}"))


async def _remember_single_choice(provider: Provider) -> None:
    log.info("Provider %s answers n > 1 with one choice; the app will ask n times", provider.name)
    _single_choice.add((provider.pk, provider.endpoint))
    await cache.aset(f"llm:single-choice:{provider.pk}:{provider.endpoint}", True, SINGLE_CHOICE_SECONDS)


def _rejects_n(error: llm.ProviderError) -> bool:
    return (
        isinstance(error, llm.ProviderHTTPError)
        and error.status in (400, 422)
        and re.search(r"(?<![\w-])n(?![\w-])|\bchoices\b", error.message) is not None
    )


class ChatFeed:
    """The replies of one message (one, or n choices) and the upstream request(s) that feed them.

    Replies are addressed by position (0..n-1): with n > 1 that is their choice index.
    """

    def __init__(
        self,
        conversation: Conversation,
        messages: list[Message],
        *,
        continuing: bool = False,
        reading: Reading | None = None,
    ):
        self.conversation = conversation
        self._reading = reading
        self._announced = asyncio.Event()
        self.continuing = continuing
        self.replies = [Reply(conversation, message, continuing=continuing) for message in messages]
        self.model = ""
        self.stopping = False
        self.task: asyncio.Task[None] | None = None
        self.control = Control(conversation.control_group_name, stop=self.stop, sync=self._answer_sync)
        self._pacer = pacer.current()
        loop = asyncio.get_running_loop()
        # Resolved when a reply's choice has been received (or with what went wrong with it).
        self._received: list[asyncio.Future[None]] = [loop.create_future() for _ in self.replies]
        for future in self._received:
            future.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved, even if unread
        self._streaming = set(range(len(self.replies)))  # positions of the replies not ended yet
        self._prepared: asyncio.Task[tuple[Provider, Prompt]] | None = None
        self._upstream: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Listen for commands, before anyone is told the replies exist (so no sync is lost)."""
        await self.control.open()

    def start(self, *, announced: bool = True) -> asyncio.Task[None]:
        """Ask the provider; with `announced=False`, the replies publish nothing until announced()."""
        if announced:
            self._announced.set()
        for reply in self.replies:
            reply.gate = self._announced
        self.task = running.start(self, self._run(), name=f"generation-{self.replies[0].message_id}")
        return self.task

    def announced(self) -> None:
        """Every page has been told the replies exist (or telling them failed): they may publish."""
        self._announced.set()

    def stop(self) -> None:
        """Stop every reply, and the upstream request(s)."""
        if self.stopping:
            return
        self.stopping = True
        for future in self._received:
            future.cancel()
        if self._upstream is not None:
            self._upstream.cancel()  # closes the upstream connection(s)

    async def _answer_sync(self, reply_to: str) -> None:
        for position in sorted(self._streaming):
            await self.replies[position].answer_sync(reply_to)

    # -- the replies --------------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            if not self.control.opened:
                await self.control.open()
            for reply in self.replies:
                self._pacer.add(reply)  # heartbeats, then checkpoints, until the final save
            self._prepared = asyncio.create_task(self._prepare())
            ends = await asyncio.gather(
                *(self._follow(position) for position in range(len(self.replies))), return_exceptions=True
            )
            for end in ends:
                if isinstance(end, BaseException):  # its final save failed too: the reply stays streaming
                    log.error("A reply of conversation %s could not end", self.conversation.pk, exc_info=end)
        finally:
            for reply in self.replies:
                self._pacer.remove(reply)
            if self._upstream is not None and not self._upstream.done():
                self._upstream.cancel()
            await self.control.close()

    async def _follow(self, position: int) -> None:
        """One reply, from the prompt to its final save."""
        assert self._prepared is not None
        reply = self.replies[position]
        try:
            try:
                provider, prompt = await asyncio.shield(self._prepared)  # built once for all
            except llm.ProviderError as exc:
                await self._end(reply, Message.Status.ERROR, exc.user_message)
                return
            if self.stopping:
                await self._end(reply, Message.Status.STOPPED)
                return
            if self._upstream is None:
                self._upstream = asyncio.create_task(self._fetch(provider, prompt), name="choices-upstream")
            reply.start()
            try:
                await self._received[position]
                status, error = Message.Status.COMPLETE, ""
            except asyncio.CancelledError:
                if not self.stopping:
                    raise
                status, error = Message.Status.STOPPED, ""
            except llm.ProviderError as exc:
                log.info("Generation %s failed: %s (%s)", reply.message_id, exc.kind, exc.message)
                status, error = Message.Status.ERROR, exc.user_message
                if isinstance(exc, llm.StreamInterrupted):
                    status = Message.Status.INTERRUPTED
            finally:
                reply.close()
            await reply.drained()  # it publishes what is left, in order
            if status == Message.Status.COMPLETE and not reply.content and not reply.finish_reason:
                status, error = Message.Status.ERROR, _("The provider finished without saying anything.")
            await self._count_usage(position, provider, prompt)
            await self._end(reply, status, error)
        except Exception as exc:
            log.exception("Generation %s crashed", reply.message_id)
            await self._end(
                reply,
                Message.Status.ERROR,
                _("Internal error while generating: %(error)s") % {"error": type(exc).__name__},
            )
        finally:
            self._pacer.remove(reply)
            self._streaming.discard(position)

    async def _end(self, reply: Reply, status: str, error: str = "") -> None:
        self._pacer.remove(reply)  # no checkpoint after this
        await reply.finish(status, error)

    async def _prepare(self) -> tuple[Provider, Prompt]:
        reading = self._reading or await database_sync_to_async(read_for)(self.conversation.pk, self.replies[0].message)
        self._reading = None
        conversation, branch, context_length = reading.conversation, reading.branch, reading.context_length
        self.conversation = conversation
        for reply in self.replies:
            reply.conversation = conversation
        provider = usable_provider(conversation)
        lead = self.replies[0]
        self.model = await model_to_ask(conversation, provider, lead.model)
        if context_length is None:
            context_length = await database_sync_to_async(provider.context_length_for)(self.model)
        prompt = await build_prompt(conversation, provider, branch, context_length)
        if self.continuing:
            prompt = continuation_prompt(prompt, lead.message)
        json_mode = asks_for_json(conversation.params)
        for reply in self.replies:
            reply.model, reply.json_mode = self.model, json_mode
        if prompt.context_start_id:
            ids = [reply.message_id for reply in self.replies]
            await Message.objects.filter(pk__in=ids).aupdate(context_start_id=prompt.context_start_id)
            await lead.publish(events.context(lead.message_id, prompt.context_start_id))
        return provider, prompt

    async def _count_usage(self, position: int, provider: Provider, prompt: Prompt) -> None:
        """Count what the provider did not report (marked estimated)."""
        reply = self.replies[position]
        if reply.usage and reply.usage.completion_tokens is not None:
            return
        text = reply.generated_text()
        prompt_tokens = await tokens_in(provider, prompt.text)
        usage = llm.Usage(prompt_tokens, await tokens_in(provider, text) if text else 0)
        if position > 0 and not reply.own_request:
            usage.prompt_tokens = 0  # one request for n choices: its prompt is counted on the first
        reply.usage, reply.usage_estimated = usage, True

    # -- upstream -----------------------------------------------------------------------------------

    def _payload(self, prompt: Prompt, *, n: bool) -> dict[str, Any]:
        """The request; without `n` unless it is the one request for n > 1 choices."""
        try:
            # Checked again at send time: only settings that pass the panel's rules are sent.
            params = request_fields(self.conversation.params)
        except InvalidParams as exc:
            raise llm.ProviderError(exc.message) from None
        if not n and params.get("n", 1) != 1:
            params.pop("n")
        return {
            "model": self.model,
            "messages": prompt.messages,
            **params,
            "user": llm.user_id_for_provider(self.conversation.owner_id),
        }

    def _resolve(self, position: int, error: BaseException | None = None) -> None:
        future = self._received[position]
        if future.done():
            return
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)

    async def _fetch(self, provider: Provider, prompt: Prompt) -> None:
        try:
            if len(self.replies) == 1:
                reply = self.replies[0]
                usage = await read_stream(provider, self._payload(prompt, n=False), {0: reply})
                if usage:
                    reply.usage = usage
                self._resolve(0)
            elif await _knows_single_choice(provider):
                await self._separately(provider, prompt, range(len(self.replies)))
            else:
                await self._together(provider, prompt)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever it is, every reply must hear of it
            if len(self.replies) > 1 and not isinstance(exc, llm.ProviderError):
                log.exception("Fetching %d choices failed", len(self.replies))
            for position in range(len(self.replies)):
                self._resolve(position, exc)

    async def _together(self, provider: Provider, prompt: Prompt) -> None:
        """One request for all n choices."""
        replies = self.replies
        try:
            usage = await read_stream(provider, self._payload(prompt, n=True), dict(enumerate(replies)))
        except llm.ProviderError as exc:
            if _rejects_n(exc) and not any(r.extras.received for r in replies):
                await _remember_single_choice(provider)
                await self._separately(provider, prompt, range(len(replies)))
                return
            raise
        missing = [position for position in range(1, len(replies)) if not replies[position].extras.received]
        if missing and replies[0].extras.received:
            # The provider ignored n: choice 0 is this request's; the others get requests of their own.
            await _remember_single_choice(provider)
            replies[0].usage = usage
            self._resolve(0)
            await self._separately(provider, prompt, missing)
            return
        if usage and usage.completion_tokens is not None:
            shares = split_usage(usage.completion_tokens, [len(r.content) + r.extras.size for r in replies])
            for position, (reply, share) in enumerate(zip(replies, shares, strict=True)):
                reply.usage = llm.Usage(usage.prompt_tokens if position == 0 else 0, share)
                reply.usage_estimated = True  # the split between choices is an estimate; the total is not
        for position in range(len(replies)):
            self._resolve(position)

    async def _separately(self, provider: Provider, prompt: Prompt, positions: Iterable[int]) -> None:
        """One request per choice: all at once, or one after another for the bundled model.

        The bundled llama-cpp-python server works on one request at a time anyway (more only
        queue), and one after another each choice starts streaming as soon as it can.
        """
        await self._mark_own_requests()
        if provider.is_bundled:
            for position in positions:
                await self._single(position, provider, prompt)
            return
        tasks = [asyncio.create_task(self._single(position, provider, prompt)) for position in positions]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()

    async def _single(self, position: int, provider: Provider, prompt: Prompt) -> None:
        reply = self.replies[position]
        payload = self._payload(prompt, n=False)
        if isinstance(payload.get("seed"), int) and position:
            payload["seed"] += position  # the same seed would give the same reply n times
        try:
            usage = await read_stream(provider, payload, {0: reply})
        except llm.ProviderError as exc:
            self._resolve(position, exc)
            return
        reply.usage = usage
        self._resolve(position)

    async def _mark_own_requests(self) -> None:
        if all(reply.own_request for reply in self.replies):
            return
        for reply in self.replies:
            reply.own_request = True
        ids = [reply.message_id for reply in self.replies]
        await Message.objects.filter(pk__in=ids).aupdate(own_request=True, heartbeat_at=timezone.now())
        lead = self.replies[0]
        await lead.publish(events.choices_note(lead.message.parent_id, len(ids), True))
