import asyncio
import json

import pytest
from asgiref.sync import sync_to_async
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from django.test import Client

from chatsite.db import close_kept
from conversations.generation import feeds, running
from conversations.models import Conversation, Message, Provider
from conversations.providers import client as llm

from .fake_provider import FakeProvider
from .frames import replay

pytest_plugins = ["tests.bundled_server"]


def pytest_collection_modifyitems(items):
    """Async tests end only once the app's background work in their loop has ended."""
    for item in items:
        if asyncio.iscoroutinefunction(getattr(item, "function", None)):
            item.fixturenames.append("background_work_ends")


@pytest.fixture
async def background_work_ends():
    """Stop generations still running and let title requests finish, before the database is reset.

    A test may end while a reply it no longer watches is still being saved, or while the title
    request that follows a first reply writes its result: a database flush (TransactionTestCase)
    racing those writes deadlocked on PostgreSQL.
    """
    yield
    await running.stop_all_and_wait(timeout=10)


@pytest.fixture(autouse=True)
def fresh_channel_layer():
    """Each test gets its own channel layer object.

    pytest-asyncio gives every test a new event loop, and a Redis layer object remembers the loop
    of a receive() still pending from the previous test (its lock is bound to that loop).
    """
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.fixture(autouse=True)
def kept_connections_closed():
    """The websocket thread keeps its database connection (chatsite/db.py): closed after each test.

    A connection left open would keep PostgreSQL from dropping the test database at the end.
    """
    yield
    close_kept()


@pytest.fixture(scope="session")
def fake_server():
    server = FakeProvider().start()
    yield server
    server.stop()


def forget_cached_model_lists():
    """Drop cached GET /models answers without touching anything else in the cache's store.

    With REDIS_URL set, cache.clear() would FLUSHDB the database the channel layer lives in too.
    """
    store = caches["default"]
    if isinstance(store, RedisCache):
        client = store._cache.get_client(write=True)
        keys = list(client.scan_iter(match="*llm:models:*")) + list(client.scan_iter(match="*llm:single-choice:*"))
        if keys:
            client.delete(*keys)
    else:
        store.clear()


@pytest.fixture
def fake(fake_server):
    """The fake provider, emptied of queued responses and recorded requests."""
    fake_server.reset()
    forget_cached_model_lists()
    llm.reset_for_tests()
    feeds.reset_for_tests()  # providers found to ignore n
    yield fake_server
    fake_server.reset()


@pytest.fixture
def provider(db, fake):
    return Provider.objects.create(name="Fake", base_url=fake.base_url, is_default=True, default_model="fake-model")


@pytest.fixture
def alice(db):
    return get_user_model().objects.create_user("alice", password="alice-password-123")


@pytest.fixture
def bob(db):
    return get_user_model().objects.create_user("bob", password="bob-password-123")


@pytest.fixture
def conversation(alice, provider):
    return Conversation.objects.create(owner=alice, provider=provider, model="fake-model")


def login_client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def alice_client(alice):
    return login_client(alice)


@pytest.fixture
def bob_client(bob):
    return login_client(bob)


class Socket:
    """A WebsocketCommunicator through the real ASGI stack (origin check, session auth, router)."""

    def __init__(self, communicator):
        self.communicator = communicator
        self.frames: list[str] = []

    async def send(self, **data):
        await self.communicator.send_to(text_data=json.dumps(data))

    async def receive_until(self, needle: str, timeout: float = 5.0) -> str:
        """Collect frames until one contains `needle`; return all text received so far."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if any(needle in frame for frame in self.frames):
                return "".join(self.frames)
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"no frame contained {needle!r}; got:\n" + "\n".join(self.frames))
            try:
                self.frames.append(await self.communicator.receive_from(timeout=remaining))
            except TimeoutError:
                continue

    async def close(self):
        await self.communicator.disconnect()


async def open_socket(user, code, *, origin="http://testserver") -> tuple[Socket, bool, int | None]:
    from chatsite.asgi import application

    headers = [(b"origin", origin.encode()), (b"host", b"testserver")]
    if user is not None:
        session_key = await sync_to_async(lambda: login_client(user).session.session_key)()
        headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={session_key}".encode()))
    communicator = WebsocketCommunicator(application, f"/ws/c/{code}/", headers=headers)
    connected, close_code = await communicator.connect(timeout=5)
    return Socket(communicator), connected, close_code


def text_seen(frames: list[str], message_id: int) -> str:
    """The HTML the streamed frames built for one reply, as a browser would swap them in."""
    return replay(frames, message_id)


async def replies(conversation) -> list[Message]:
    rows = conversation.messages.filter(role="assistant").order_by("pk")
    return [m async for m in rows]


async def wait_until_done(conversation, count: int, timeout: float = 10.0) -> list[Message]:
    """Wait until `count` replies exist and none is streaming."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        found = await replies(conversation)
        if len(found) >= count and not any(m.is_streaming for m in found):
            return found
        await asyncio.sleep(0.02)
    raise AssertionError(f"replies still streaming: {[(m.pk, m.status) for m in await replies(conversation)]}")


async def settle(socket, quiet: float = 0.3):
    """Take in frames until none has come for `quiet` seconds (the last replies' final renders)."""
    while not await socket.communicator.receive_nothing(timeout=quiet):
        socket.frames.append(await socket.communicator.receive_from())


@pytest.fixture
def owner(transactional_db, alice, provider):
    """Alice's session key and a conversation of hers, committed (for live Daphne processes)."""
    client = Client()
    client.force_login(alice)
    conversation = Conversation.objects.create(owner=alice, provider=provider, model="fake-model")
    return client.session.session_key, conversation
