"""n > 1: several replies to one message, streamed side by side until the user picks one.

Each choice is an assistant Message (siblings under the same parent, `choice_index` 0..n-1,
`choices_open` until the user picks) with a Generation of its own: its deltas, snapshots,
checkpoints, heartbeats and final save work exactly as for a single reply. A ChoiceSet feeds
them from one upstream request, routing each chunk's choices by index.

Some providers (the bundled llama-cpp-python server among them) answer n > 1 with one choice.
Then the app asks n times itself (varying the seed, if one is set, so the choices differ) and
marks the choices `own_request`, which the page says. Such a provider is known up front (the
bundled one), found out from an answer that brought only choice 0 (then the missing choices are
asked for at once), or from a 400 that names `n`; it is remembered for the next time.

Stop from any tab reaches every Generation of the set through the control group; each one stops
the whole set, which cancels the upstream request(s).
"""

from __future__ import annotations

import asyncio
import logging
import re

from django.core.cache import cache
from django.utils import timezone

from conversations import events
from conversations.models import Conversation, Message, Provider
from conversations.providers import client as llm

log = logging.getLogger(__name__)

SINGLE_CHOICE_SECONDS = 24 * 3600  # how long a provider is remembered to ignore n

_single_choice: set[tuple[int, str]] = set()


def streaming_ids(branch: list[Message]) -> list[int]:
    ids = []
    for message in branch:
        for candidate in getattr(message, "open_choices", []) or [message]:
            if candidate.is_streaming and candidate.pk not in ids:
                ids.append(candidate.pk)
    return ids


# --- Generating them ---------------------------------------------------------------------------


class Opened:
    """Replies that listen for commands (stop, sync) but do not stream yet: announce them, then start()."""

    def __init__(self, generations: list):
        self._generations = generations

    def start(self) -> None:
        for generation in self._generations:
            generation.start()


async def open_chat(conversation: Conversation, replies: list[Message], *, continuing: bool = False) -> Opened:
    """One Generation per reply (n > 1: fed by one ChoiceSet), listening for commands."""
    from conversations.generation.reply import Generation

    generations = [Generation(conversation, reply, continuing=continuing) for reply in replies]
    if len(generations) > 1:
        ChoiceSet(generations)
    for generation in generations:
        await generation.open()
    return Opened(generations)


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


def split_usage(total: int, weights: list[int]) -> list[int]:
    """Whole shares of `total` in proportion to `weights`, adding up to `total` exactly."""
    weights = [max(w, 1) for w in weights]
    exact = [total * w / sum(weights) for w in weights]
    shares = [int(x) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: exact[i] - shares[i], reverse=True)
    for i in by_remainder[: total - sum(shares)]:
        shares[i] += 1
    return shares


class ChoiceSet:
    """The Generations of the n choices of one reply, fed from one upstream request (or n)."""

    def __init__(self, generations: list):
        self.members = generations
        for generation in generations:
            generation.choices = self
        loop = asyncio.get_running_loop()
        self._done = [loop.create_future() for _ in generations]
        for future in self._done:
            future.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved, even if unread
        self._prepared: asyncio.Task | None = None
        self._tasks: list[asyncio.Task] = []
        self.stopping = False

    # -- what each member's Generation calls ------------------------------------------------

    async def prepare(self, member):
        """Build the prompt once for all choices."""
        lead = self.members[0]
        if self._prepared is None:
            self._prepared = asyncio.create_task(lead._prepare())
        provider, prompt = await asyncio.shield(self._prepared)
        if member is not lead:
            member.conversation, member.model, member.json_mode = lead.conversation, lead.model, lead.json_mode
            if prompt.context_start_id:
                await Message.objects.filter(pk=member.message_id).aupdate(context_start_id=prompt.context_start_id)
        return provider, prompt

    async def read(self, member, provider: Provider, prompt) -> None:
        """Return when this member's choice has been received (raise what went wrong with it)."""
        if not self._tasks and not self.stopping:
            self._tasks.append(asyncio.create_task(self._fetch(provider, prompt), name="choices-upstream"))
        await asyncio.shield(self._done[member.choice_index])

    def stop(self):
        if self.stopping:
            return
        self.stopping = True
        for generation in self.members:
            generation.stop_requested = True
            if generation._reader is not None:
                generation._reader.cancel()
        for task in self._tasks:
            task.cancel()  # closes the upstream connection(s)

    def shares_prompt(self, member) -> bool:
        """One request made several choices: its prompt is counted once, on the first."""
        return member.choice_index > 0 and not member.own_request

    # -- upstream ---------------------------------------------------------------------------

    def _resolve(self, index: int, error: BaseException | None = None):
        future = self._done[index]
        if future.done():
            return
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)

    async def _fetch(self, provider: Provider, prompt):
        try:
            if await _knows_single_choice(provider):
                await self._separately(provider, prompt, range(len(self.members)))
            else:
                await self._together(provider, prompt)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever it is, every choice must hear of it
            if not isinstance(exc, llm.ProviderError):
                log.exception("Fetching %d choices failed", len(self.members))
            for index in range(len(self.members)):
                self._resolve(index, exc)

    async def _together(self, provider: Provider, prompt):
        from conversations.generation.reply import read_stream

        members = self.members
        payload = members[0].payload(prompt)
        try:
            usage = await read_stream(provider, payload, lambda i: members[i] if 0 <= i < len(members) else None)
        except llm.ProviderError as exc:
            if _rejects_n(exc) and not any(m.extras.received for m in members):
                await _remember_single_choice(provider)
                await self._separately(provider, prompt, range(len(members)))
                return
            raise
        missing = [m.choice_index for m in members[1:] if not m.extras.received]
        if missing and members[0].extras.received:
            # The provider ignored n: choice 0 is this request's; the others get requests of their own.
            await _remember_single_choice(provider)
            members[0].usage = usage
            self._resolve(0)
            await self._separately(provider, prompt, missing)
            return
        if usage and usage.completion_tokens is not None:
            shares = split_usage(usage.completion_tokens, [len(m.content) + m.extras.size for m in members])
            for member, share in zip(members, shares, strict=True):
                member.usage = llm.Usage(usage.prompt_tokens if member.choice_index == 0 else 0, share)
                member.usage_estimated = True  # the split between choices is an estimate; the total is not
        for index in range(len(members)):
            self._resolve(index)

    async def _separately(self, provider: Provider, prompt, indexes):
        """One request per choice: all at once, or one after another for the bundled model.

        The bundled llama-cpp-python server works on one request at a time anyway (more only
        queue), and one after another each choice starts streaming as soon as it can.
        """
        await self._mark_own_requests()
        if provider.is_bundled:
            for index in indexes:
                await self._single(index, provider, prompt)
            return
        tasks = [asyncio.create_task(self._single(index, provider, prompt)) for index in indexes]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()

    async def _single(self, index: int, provider: Provider, prompt):
        from conversations.generation.reply import read_stream

        member = self.members[index]
        payload = member.payload(prompt)
        payload.pop("n", None)
        if isinstance(payload.get("seed"), int) and index:
            payload["seed"] += index  # the same seed would give the same reply n times
        try:
            usage = await read_stream(provider, payload, lambda i: member if i == 0 else None)
        except llm.ProviderError as exc:
            self._resolve(index, exc)
            return
        member.usage = usage
        self._resolve(index)

    async def _mark_own_requests(self):
        if all(m.own_request for m in self.members):
            return
        for member in self.members:
            member.own_request = True
        ids = [m.message_id for m in self.members]
        await Message.objects.filter(pk__in=ids).aupdate(own_request=True, heartbeat_at=timezone.now())
        lead = self.members[0]
        await lead.layer.group_send(
            lead.group,
            events.choices_note(lead.reply.parent_id, len(ids), True),
        )
