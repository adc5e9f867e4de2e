"""No silent loss: a page that misses events repairs itself, every tab gets the end, live replies stay alive."""

import asyncio
import time

import pytest
from asgiref.sync import sync_to_async
from channels.layers import channel_layers, get_channel_layer

from chatsite.layers import ProcessChannelLayer
from conversations.generation import pacer
from conversations.models import Message
from conversations.rendering import render_html

from .conftest import open_socket, settle, text_seen, wait_until_done
from .fake_provider import Stream, text_stream
from .frames import Page

pytestmark = pytest.mark.django_db(transaction=True)

DONE = 'data-status="complete"'


def shown(frames: list[str], message_id: int) -> str:
    """The reply's HTML on a page that was sent `frames`, the end included (as a browser swaps them in)."""
    page = Page()
    for frame in frames:
        page.apply(frame)
    return page.text_html(message_id)


class LossyLayer(ProcessChannelLayer):
    """The one-process layer, losing events on their way to pages as a full channel or a Redis blip would."""

    drop_every = 0  # every n-th delta to a page is lost (0: none)
    drop_finished = False  # every `generation.finished` to a page is lost

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.deltas = 0
        self.lost: list[str] = []

    async def group_send(self, group, message):
        kind = message.get("type")
        if group.startswith("conv.") and kind == "generation.delta" and self.drop_every:
            self.deltas += 1
            if self.deltas % self.drop_every == 0:
                self.lost.append(f"{kind} {message['seq']}")
                return
        if group.startswith("conv.") and kind == "generation.finished" and self.drop_finished:
            self.lost.append(kind)
            return
        await super().group_send(group, message)


@pytest.fixture
def lossy(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "tests.test_stream_repair.LossyLayer"}}
    channel_layers.backends.clear()
    LossyLayer.drop_every, LossyLayer.drop_finished = 0, False
    yield LossyLayer
    LossyLayer.drop_every, LossyLayer.drop_finished = 0, False
    channel_layers.backends.clear()


async def test_a_page_that_misses_deltas_asks_for_a_snapshot_and_shows_every_word(lossy, alice, conversation, fake):
    lossy.drop_every = 2
    words = [f"w{i} " for i in range(200)]
    fake.push(Stream(text_stream(words), delay=0.01))
    socket, _, _ = await open_socket(alice, conversation.code)
    await socket.send(message="lose some")
    [reply] = await wait_until_done(conversation, 1, timeout=20)
    await socket.receive_until(f'id="msg-{reply.pk}" class="msg msg-assistant" {DONE}', timeout=10)
    await settle(socket)
    assert len(get_channel_layer().lost) >= 2  # deltas were lost on the way
    assert reply.content.strip() == "".join(words).strip()
    assert shown(socket.frames, reply.pk) == render_html(reply.content)  # no hole, no duplicate
    await socket.close()


async def test_a_page_that_never_hears_the_end_finds_it_in_the_database(lossy, alice, conversation, fake):
    lossy.drop_finished = True
    fake.push(Stream(text_stream(["The ", "end ", "is ", "lost."]), delay=0.02))
    socket, _, _ = await open_socket(alice, conversation.code)
    await socket.send(message="end quietly")
    [reply] = await wait_until_done(conversation, 1, timeout=20)
    assert reply.status == "complete"
    # No finished event reaches the page; its watchdog looks in the database once the reply is quiet.
    await socket.receive_until(f'id="msg-{reply.pk}" class="msg msg-assistant" {DONE}', timeout=20)
    assert get_channel_layer().lost == ["generation.finished"]
    await settle(socket)
    assert shown(socket.frames, reply.pk) == render_html("The end is lost.")
    assert 'data-busy="false"' in socket.frames[-1] or any('data-busy="false"' in f for f in socket.frames[-3:])
    await socket.close()


async def test_a_full_channel_is_logged_and_counted(settings, caplog):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "chatsite.layers.ProcessChannelLayer", "CONFIG": {"capacity": 2}}}
    channel_layers.backends.clear()
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add("conv.full", channel)
    for seq in range(1, 5):
        await layer.group_send("conv.full", {"type": "generation.delta", "seq": seq})
    assert layer.dropped == 2
    assert [r.levelname for r in caplog.records if "is full" in r.getMessage()] == ["WARNING", "WARNING"]
    assert [(await layer.receive(channel))["seq"] for _ in range(2)] == [1, 2]
    channel_layers.backends.clear()


async def test_a_tab_open_before_another_tab_sent_gets_the_finished_reply(alice, conversation, fake):
    fake.push(Stream(text_stream(["Hello ", "from ", "the ", "other ", "tab."]), delay=0.02))
    watching, _, _ = await open_socket(alice, conversation.code)
    sending, _, _ = await open_socket(alice, conversation.code)
    await sending.send(message="hi")
    [reply] = await wait_until_done(conversation, 1, timeout=20)
    html = await watching.receive_until(f'id="msg-{reply.pk}" class="msg msg-assistant" {DONE}')
    # The finished reply with its controls, as the sending tab has it.
    finished = html[html.index(f'<article id="msg-{reply.pk}" class="msg msg-assistant" {DONE}') :]
    assert "Regenerate" in finished and "Copy" in finished
    assert text_seen(watching.frames, reply.pk) == render_html("Hello from the other tab.")
    await watching.close()
    await sending.close()


async def test_a_stopped_reply_shows_stopped_in_a_tab_open_before_it_started(alice, conversation, fake):
    fake.push(Stream(text_stream([f"w{i} " for i in range(200)]), delay=0.02))
    watching, _, _ = await open_socket(alice, conversation.code)
    sending, _, _ = await open_socket(alice, conversation.code)
    await sending.send(message="go on")
    await watching.receive_until("w5 ")
    await sending.send(action="stop")
    await watching.receive_until('data-status="stopped"')
    await watching.close()
    await sending.close()


class Streaming:
    """A reply as the pacer sees it (pacer.Streaming), streaming with no text yet."""

    closing = False
    progress = 0
    first_token_at = None

    def __init__(self, message_id: int):
        self.message_id = message_id

    def checkpoint(self):
        return pacer.Checkpoint("", "", None)


def test_a_reply_stays_alive_while_its_event_loop_is_overloaded(settings, alice, conversation, monkeypatch):
    """The heartbeat comes from a thread: an event loop that is late (busy) does not make a live reply look dead."""
    settings.STALE_GENERATION_SECONDS = 2
    monkeypatch.setattr(pacer, "HEARTBEAT_SECONDS", 0.3)
    reply = Message.objects.create(conversation=conversation, role="assistant", status="streaming")

    async def busy_loop():
        pace = pacer.current()
        live = Streaming(reply.pk)
        pace.add(live)
        for _ in range(6):  # the loop is blocked 0.5 s at a time for 3 s: it ticks, but late
            time.sleep(0.5)
            await asyncio.sleep(0.06)
        stale = await Message.objects.filter(pk=reply.pk).stale().acount()
        pace.remove(live)
        return stale

    assert asyncio.run(busy_loop()) == 0
    reply.refresh_from_db()
    assert reply.status == "streaming"


def test_a_stuck_event_loop_stops_proving_its_replies_alive(settings, alice, conversation, monkeypatch):
    settings.STALE_GENERATION_SECONDS = 1
    monkeypatch.setattr(pacer, "HEARTBEAT_SECONDS", 0.2)
    monkeypatch.setattr(pacer, "LOOP_STALL_SECONDS", 0.5)
    reply = Message.objects.create(conversation=conversation, role="assistant", status="streaming")

    async def stuck_loop():
        pace = pacer.current()
        live = Streaming(reply.pk)
        pace.add(live)
        time.sleep(2.5)  # never yields: the pacer cannot tick, so the thread stops beating for it
        stale = await sync_to_async(Message.objects.filter(pk=reply.pk).stale().count)()
        pace.remove(live)
        return stale

    assert asyncio.run(stuck_loop()) == 1
