"""The conversation library: sidebar pages, search, pin, archive, export, import, model titles,
and long conversations opened page by page. Browser behaviour is in test_browser_library.py."""

import asyncio
import json
import re

import pytest
from asgiref.sync import sync_to_async
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from conversations.generation import titles
from conversations.library import views as library
from conversations.models import Conversation, Message

from .conftest import login_client, open_socket
from .fake_provider import Reply

DONE = 'msg-assistant" data-status="complete"'


def titled(owner, provider, title, **fields):
    return Conversation.objects.create(owner=owner, provider=provider, title=title, **fields)


def chain(conversation, count, *, start_parent=None, prefix="message"):
    """`count` messages in one line (user, assistant, ...), saved in two queries; returns them oldest first."""
    roles = [Message.Role.USER, Message.Role.ASSISTANT]
    messages = Message.objects.bulk_create(
        [Message(conversation=conversation, role=roles[i % 2], content=f"{prefix} {i}") for i in range(count)]
    )
    parent_id = start_parent.pk if start_parent else None
    for message in messages:
        message.parent_id, parent_id = parent_id, message.pk
    Message.objects.bulk_update(messages, ["parent"])
    return messages


def links(html: str) -> list[str]:
    """Titles of the conversation links in a sidebar fragment, in order."""
    nav = html[html.index('id="sidebar-list"') :]
    nav = nav[: nav.index("</nav>")]
    return re.findall(r'<a href="/c/[0-9a-f-]{36}/"[^>]*>([^<]*)</a>', nav)


# -- sidebar: pages, pinned first, archive -------------------------------------------------------------


@pytest.mark.django_db
def test_the_sidebar_lists_pinned_conversations_first(alice_client, alice, bob, provider):
    old_pinned = titled(alice, provider, "Old but pinned", pinned=True)
    titled(alice, provider, "Recent one")
    titled(bob, provider, "Bob pinned", pinned=True)
    html = alice_client.get(f"/c/{old_pinned.code}/").content.decode()
    assert links(html) == ["Old but pinned", "Recent one"]
    nav = html[html.index('id="sidebar-list"') :]
    assert nav.index(">Pinned<") < nav.index("Old but pinned") < nav.index(">Recent<") < nav.index("Recent one")


@pytest.mark.django_db
def test_the_sidebar_comes_in_pages_that_continue_by_cursor(alice_client, alice, provider):
    for i in range(120):
        titled(alice, provider, f"Conversation {i:03}")
    first = alice_client.get("/c/sidebar/").content.decode()
    assert links(first) == [f"Conversation {i:03}" for i in range(119, 69, -1)]
    more = re.search(r'hx-get="(/c/sidebar/\?after=[^"]+)"', first).group(1).replace("&amp;", "&")
    second = alice_client.get(more).content.decode()
    assert 'id="sidebar-list"' not in second  # only rows, put in place of the "Show more" row
    assert re.findall(r">(Conversation \d+)</a>", second) == [f"Conversation {i:03}" for i in range(69, 19, -1)]
    last_url = re.search(r'hx-get="(/c/sidebar/\?after=[^"]+)"', second).group(1).replace("&amp;", "&")
    last = alice_client.get(last_url).content.decode()
    assert re.findall(r">(Conversation \d+)</a>", last) == [f"Conversation {i:03}" for i in range(19, -1, -1)]
    assert "after=" not in last  # the end of the list


@pytest.mark.django_db
def test_a_malformed_cursor_is_refused(alice_client):
    assert alice_client.get("/c/sidebar/?after=drop%20table").status_code == 400


@pytest.mark.django_db
def test_archived_conversations_leave_the_main_list_for_their_own_view(alice_client, alice, provider):
    kept = titled(alice, provider, "Kept")
    old = titled(alice, provider, "Old news", pinned=True)
    response = alice_client.post(f"/c/{old.code}/archive/", {"archived": "1"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    old.refresh_from_db()
    assert old.archived and not old.pinned  # archiving also unpins
    html = response.content.decode()
    assert "Unarchive" in html and 'id="sidebar-list" hx-swap-oob="true"' in html
    assert links(html) == ["Kept"]
    assert links(alice_client.get(f"/c/{kept.code}/").content.decode()) == ["Kept"]
    archived = alice_client.get("/c/sidebar/?view=archived").content.decode()
    assert links(archived) == ["Old news"]
    assert 'aria-pressed="true"' in archived.split("Archived</button>")[0].rsplit("<button", 1)[1]

    alice_client.post(f"/c/{old.code}/archive/", {"archived": "0"})
    old.refresh_from_db()
    assert not old.archived
    assert links(alice_client.get("/c/sidebar/").content.decode()) == ["Old news", "Kept"]
    assert "No archived conversations." in alice_client.get("/c/sidebar/?view=archived").content.decode()


@pytest.mark.django_db
def test_it_pins_and_unpins(alice_client, alice, provider):
    first = titled(alice, provider, "First")
    titled(alice, provider, "Second")
    response = alice_client.post(f"/c/{first.code}/pin/", {"pinned": "1"}, HTTP_HX_REQUEST="true")
    assert links(response.content.decode()) == ["First", "Second"]
    assert ">Unpin<" in response.content.decode()
    response = alice_client.post(f"/c/{first.code}/pin/", {"pinned": "0"})
    assert response.status_code == 302  # without htmx: back to the conversation
    first.refresh_from_db()
    assert not first.pinned
    assert links(alice_client.get("/c/sidebar/").content.decode()) == ["Second", "First"]


# -- search -----------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_search_finds_titles_and_message_text_of_my_conversations_only(alice_client, alice, bob, provider):
    by_title = titled(alice, provider, "Kyoto travel notes")
    by_text = titled(alice, provider, "Weekend plans")
    user = by_text.messages.create(role="user", content="Where to eat?")
    by_text.messages.create(role="assistant", parent=user, content="Try the ramen near KYOTO station, it is < 5 min.")
    archived = titled(alice, provider, "Old Kyoto idea", archived=True)
    titled(alice, provider, "Unrelated")
    titled(bob, provider, "Bob's Kyoto secret")

    html = alice_client.get("/c/sidebar/", {"q": "  kyoto ", "current": str(by_title.code)}).content.decode()
    assert sorted(links(html)) == ["Kyoto travel notes", "Old Kyoto idea", "Weekend plans"]
    assert "3 conversations match “kyoto”" in html
    assert "near <mark>KYOTO</mark> station, it is &lt; 5 min." in html  # the matching text, escaped
    assert f'href="/c/{by_title.code}/" aria-current="page"' in html
    assert f'href="/c/{archived.code}/"' in html and ">Archived</span>" in html
    assert "Bob" not in html


@pytest.mark.django_db
def test_search_treats_wildcards_as_text(alice_client, alice, provider):
    titled(alice, provider, "100% sure")
    titled(alice, provider, "Other")
    assert links(alice_client.get("/c/sidebar/", {"q": "%"}).content.decode()) == ["100% sure"]
    assert links(alice_client.get("/c/sidebar/", {"q": "_"}).content.decode()) == []


@pytest.mark.django_db
def test_an_empty_search_shows_the_list_again(alice_client, alice, provider):
    titled(alice, provider, "Something")
    html = alice_client.get("/c/sidebar/", {"q": "   "}).content.decode()
    assert links(html) == ["Something"] and "match" not in html


# -- export ---------------------------------------------------------------------------------------------


def branched(conversation):
    """A conversation with an edited question (two versions) and a regenerated reply (two versions)."""
    q1 = conversation.messages.create(role="user", content="First question")
    a1 = conversation.messages.create(role="assistant", parent=q1, content="First **answer**", model="fake-model")
    q2 = conversation.messages.create(role="user", parent=a1, content="Second question")
    conversation.messages.create(role="assistant", parent=q2, content="Old reply", prompt_tokens=3, completion_tokens=2)
    q2b = conversation.messages.create(role="user", parent=a1, content="Second question, edited")
    conversation.messages.create(role="assistant", parent=q2b, content="Reply one")
    a3b = conversation.messages.create(role="assistant", parent=q2b, content="Reply two <script>alert(1)</script>")
    Conversation.objects.filter(pk=conversation.pk).update(title="Branchy", active_leaf=a3b)
    conversation.refresh_from_db()
    return conversation


@pytest.mark.django_db
def test_it_exports_markdown_with_every_branch(alice_client, conversation):
    branched(conversation)
    response = alice_client.get(f"/c/{conversation.code}/export.md")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/markdown; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="branchy.md"'
    text = response.content.decode()
    assert text.startswith("# Branchy\n")
    for content in ["First question", "First **answer**", "Old reply", "Second question, edited", "Reply one"]:
        assert content in text
    assert text.index("First question") < text.index("Second question") < text.index("Reply two")


@pytest.mark.django_db
def test_it_exports_json_with_the_message_tree(alice_client, conversation, provider):
    Conversation.objects.filter(pk=conversation.pk).update(flagged=True, review_note="looked at it")
    branched(conversation)
    response = alice_client.get(f"/c/{conversation.code}/export.json")
    assert response["Content-Disposition"] == 'attachment; filename="branchy.json"'
    data = json.loads(response.content)
    assert (data["format"], data["version"], data["title"]) == ("chat.conversation", 1, "Branchy")
    assert [m["content"] for m in data["messages"]][:2] == ["First question", "First **answer**"]
    by_id = {m["id"]: m for m in data["messages"]}
    assert by_id[data["active_leaf"]]["content"] == "Reply two <script>alert(1)</script>"
    assert by_id[by_id[data["active_leaf"]]["parent"]]["content"] == "Second question, edited"
    assert "flagged" not in data and "review_note" not in data  # reviewers' notes are not the owner's to see


def shape(conversation):
    """The tree as (role, content, parent's position, status) in creation order, and the branch shown."""
    messages = list(conversation.messages.order_by("pk"))
    position = {m.pk: i for i, m in enumerate(messages)}
    tree = [(m.role, m.content, position.get(m.parent_id), m.status) for m in messages]
    shown = [(m.content, m.version, m.versions) for m in conversation.branch()]
    return tree, shown


@pytest.mark.django_db
def test_an_export_imports_back_as_the_same_tree_for_whoever_imports_it(alice_client, bob_client, bob, conversation):
    branched(conversation)
    exported = alice_client.get(f"/c/{conversation.code}/export.json").content
    upload = SimpleUploadedFile("branchy.json", exported, content_type="application/json")
    response = bob_client.post("/c/import/", {"file": upload})
    assert response.status_code == 302
    imported = Conversation.objects.get(owner=bob)
    assert response["Location"] == f"/c/{imported.code}/"
    assert imported.title == "Branchy" and imported.code != conversation.code
    assert imported.title_source == Conversation.TitleSource.USER  # the model never renames it
    assert shape(imported) == shape(conversation)
    assert shape(imported)[1][-1] == ("Reply two <script>alert(1)</script>", 2, 2)
    # Imported model text is rendered like any other: sanitized, never raw.
    page = bob_client.get(f"/c/{imported.code}/").content.decode()
    assert "<script>alert(1)</script>" not in page and "Reply two" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # the copy button's source text, escaped


@pytest.mark.django_db
def test_an_import_over_htmx_redirects_the_browser(alice_client, conversation):
    branched(conversation)
    exported = alice_client.get(f"/c/{conversation.code}/export.json").content
    upload = SimpleUploadedFile("x.json", exported, content_type="application/json")
    response = alice_client.post("/c/import/", {"file": upload}, HTTP_HX_REQUEST="true")
    newest = Conversation.objects.exclude(pk=conversation.pk).get()
    assert response["HX-Redirect"] == f"/c/{newest.code}/"


def minimal(**changes):
    data = {
        "format": "chat.conversation",
        "version": 1,
        "title": "Tiny",
        "messages": [
            {"id": 1, "parent": None, "role": "user", "content": "hi"},
            {"id": 2, "parent": 1, "role": "assistant", "content": "hello", "status": "streaming"},
        ],
    }
    data.update(changes)
    return json.dumps(data).encode()


@pytest.mark.django_db
def test_an_import_keeps_nothing_streaming_and_checks_settings(alice_client, alice):
    upload = SimpleUploadedFile("t.json", minimal(params={"temperature": 0.5}))
    alice_client.post("/c/import/", {"file": upload})
    imported = Conversation.objects.get(owner=alice)
    assert imported.params == {"temperature": 0.5}
    assert list(imported.messages.values_list("status", flat=True)) == ["complete", "interrupted"]


BAD_FILES = [
    (b"\xff\xfe not utf-8", "The file is not UTF-8 text"),
    (b"{not json", "The file is not valid JSON (line 1"),
    (b"[1, 2]", "This is not a conversation export: it has no list of messages."),
    (minimal(messages=[]), "The export has no messages."),
    (minimal(format="something-else"), "a format this site does not read"),
    (minimal(messages=[{"id": 1, "parent": 7, "role": "user", "content": "x"}]), "Message 1 answers a message"),
    (minimal(messages=[{"id": 1, "role": "wizard", "content": "x"}]), "Message 1: the role must be one of"),
    (minimal(messages=[{"id": 1, "role": "user", "content": 5}]), "Message 1: “content” must be text."),
    (minimal(messages=[{"id": 1, "role": "user"}, {"id": 1, "role": "user"}]), "Message 2 needs an “id” of its own."),
    (minimal(params={"temperature": "hot"}), "The settings in the file are not valid"),
    (minimal(params={"messages": []}), "The settings in the file are not valid"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("content", "message"), BAD_FILES)
def test_a_bad_file_gets_a_clear_message_and_imports_nothing(alice_client, alice, content, message):
    upload = SimpleUploadedFile("bad.json", content, content_type="application/json")
    response = alice_client.post("/c/import/", {"file": upload}, HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert response.status_code == 200
    assert 'role="alert"' in html and message in html.replace("&#x27;", "'").replace("&quot;", '"')
    assert "bad.json: " in html
    assert not Conversation.objects.filter(owner=alice).exists()
    assert not Message.objects.exists()


@pytest.mark.django_db
def test_without_htmx_a_bad_file_shows_the_import_page(alice_client):
    response = alice_client.post("/c/import/", {})
    assert response.status_code == 400
    assert "Choose a JSON file to import." in response.content.decode()
    assert alice_client.get("/c/import/").status_code == 200


@pytest.mark.django_db
def test_a_file_over_the_size_limit_is_refused(alice_client, alice, monkeypatch):
    from conversations.library import imports

    monkeypatch.setattr(imports, "MAX_BYTES", 100)
    upload = SimpleUploadedFile("big.json", minimal(title="x" * 200))
    response = alice_client.post("/c/import/", {"file": upload}, HTTP_HX_REQUEST="true")
    assert "The file is larger than" in response.content.decode()
    assert not Conversation.objects.filter(owner=alice).exists()


# -- who may do what ----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_stranger_gets_404_from_every_library_url(bob_client, conversation):
    branched(conversation)
    code = conversation.code
    first = conversation.messages.order_by("pk").last()
    assert bob_client.get(f"/c/{code}/older/?before={first.pk}").status_code == 404
    assert bob_client.get(f"/c/{code}/export.md").status_code == 404
    assert bob_client.get(f"/c/{code}/export.json").status_code == 404
    assert bob_client.post(f"/c/{code}/pin/", {"pinned": "1"}).status_code == 404
    assert bob_client.post(f"/c/{code}/archive/", {"archived": "1"}).status_code == 404
    conversation.refresh_from_db()
    assert not conversation.pinned and not conversation.archived
    assert "Branchy" not in bob_client.get("/c/sidebar/").content.decode()
    assert "Branchy" not in bob_client.get("/c/sidebar/", {"q": "question"}).content.decode()
    assert "Branchy" not in bob_client.get("/c/sidebar/", {"view": "archived"}).content.decode()


@pytest.mark.django_db
def test_library_pages_require_login(client, conversation):
    for url in ["/c/sidebar/", "/c/import/", f"/c/{conversation.code}/export.json", f"/c/{conversation.code}/older/"]:
        response = client.get(url)
        assert response.status_code == 302 and "/accounts/login/" in response["Location"]


@pytest.mark.django_db
def test_posts_without_a_csrf_token_are_refused(alice, conversation):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.post(f"/c/{conversation.code}/pin/", {"pinned": "1"}).status_code == 403
    assert client.post(f"/c/{conversation.code}/archive/", {"archived": "1"}).status_code == 403
    upload = SimpleUploadedFile("t.json", minimal())
    assert client.post("/c/import/", {"file": upload}).status_code == 403
    conversation.refresh_from_db()
    assert not conversation.pinned and not conversation.archived
    assert Conversation.objects.count() == 1


@pytest.mark.django_db
def test_state_changes_require_post(alice_client, conversation):
    assert alice_client.get(f"/c/{conversation.code}/pin/").status_code == 405
    assert alice_client.get(f"/c/{conversation.code}/archive/").status_code == 405
    assert alice_client.post("/c/sidebar/").status_code == 405


# -- long conversations -----------------------------------------------------------------------------------------


def old_branch_to(conversation, leaf_id):
    """Conversation.branch_to as it was before it read only ids (the reference its results must match)."""
    messages = list(conversation.messages.all())
    if not messages:
        return []
    by_id = {m.pk: m for m in messages}
    children = {}
    for m in messages:
        children.setdefault(m.parent_id, []).append(m.pk)
    node = by_id.get(leaf_id) if leaf_id else None
    node = node or messages[-1]
    path = []
    while node is not None:
        versions = children[node.parent_id]
        index = versions.index(node.pk)
        node.version, node.versions = index + 1, len(versions)
        node.previous_version = versions[index - 1] if index else None
        node.next_version = versions[index + 1] if index + 1 < len(versions) else None
        path.append(node)
        node = by_id.get(node.parent_id)
    return path[::-1]


def summary(messages):
    return [(m.pk, m.content, m.version, m.versions, m.previous_version, m.next_version) for m in messages]


@pytest.mark.django_db
def test_branch_to_gives_the_same_branches_as_before(conversation):
    assert conversation.branch_to(None) == []
    branched(conversation)
    for leaf in [None, 0, 10**9, *conversation.messages.values_list("pk", flat=True)]:
        assert summary(conversation.branch_to(leaf)) == summary(old_branch_to(conversation, leaf)), leaf
    assert summary(conversation.branch()) == summary(old_branch_to(conversation, conversation.active_leaf_id))


@pytest.mark.django_db
def test_a_long_conversation_opens_on_its_newest_page(alice_client, conversation, django_assert_max_num_queries):
    messages = chain(conversation, 300)
    with django_assert_max_num_queries(12):
        html = alice_client.get(f"/c/{conversation.code}/").content.decode()
    shown = re.findall(r'<article id="msg-(\d+)"', html)
    assert [int(pk) for pk in shown] == [m.pk for m in messages[-library.PAGE_SIZE :]]
    assert f'hx-get="/c/{conversation.code}/older/?before={messages[-library.PAGE_SIZE].pk}"' in html


@pytest.mark.django_db
def test_older_pages_load_until_the_start_of_the_branch(alice_client, conversation):
    messages = chain(conversation, 100)
    html = alice_client.get(f"/c/{conversation.code}/").content.decode()
    seen = [int(pk) for pk in re.findall(r'<article id="msg-(\d+)"', html)]
    while older := re.search(r'id="older-messages"[^>]*hx-get="([^"]+)"', html):
        url = older.group(1).replace("&amp;", "&")
        html = alice_client.get(url).content.decode()
        seen = [int(pk) for pk in re.findall(r'<article id="msg-(\d+)"', html)] + seen
    assert seen == [m.pk for m in messages]
    assert "hx-swap-oob" not in html


@pytest.mark.django_db
def test_older_pages_follow_the_branch_shown(alice_client, conversation):
    trunk = chain(conversation, 50, prefix="trunk")
    chain(conversation, 50, start_parent=trunk[9], prefix="other")  # a branch off message 10
    mine = chain(conversation, 50, start_parent=trunk[-1], prefix="mine")
    Conversation.objects.filter(pk=conversation.pk).update(active_leaf=mine[-1])
    html = alice_client.get(f"/c/{conversation.code}/").content.decode()
    url = re.search(r'hx-get="(/c/[^"]+/older/[^"]+)"', html).group(1).replace("&amp;", "&")
    older = alice_client.get(url).content.decode()
    assert "other" not in older
    texts = re.findall(r'class="msg-text[^"]*">(?:<p>)?(trunk \d+|mine \d+)', older)
    branch = [f"trunk {i}" for i in range(50)] + [f"mine {i}" for i in range(50)]
    assert texts == branch[-2 * library.PAGE_SIZE : -library.PAGE_SIZE]
    # Higher up, message 10 of the trunk is version 1 of 2 (the other branch starts beside it).
    top = alice_client.get(f"/c/{conversation.code}/older/?before={trunk[11].pk}").content.decode()
    assert top.count("<article") == 11 and "older-messages" not in top
    assert re.search(rf'<article id="msg-{trunk[10].pk}".*?<span>1/2</span>', top, re.DOTALL)


@pytest.mark.django_db
def test_an_older_page_draws_the_context_marker(alice_client, conversation):
    messages = chain(conversation, 100)
    last = messages[-1]
    Message.objects.filter(pk=last.pk).update(context_start=messages[10])
    html = alice_client.get(f"/c/{conversation.code}/").content.decode()
    assert 'id="context-marker"' not in html
    url = re.search(r'hx-get="(/c/[^"]+/older/[^"]+)"', html).group(1).replace("&amp;", "&")
    assert f"mark={messages[10].pk}" in url
    older = alice_client.get(url).content.decode()
    url = re.search(r'hx-get="(/c/[^"]+/older/[^"]+)"', older).group(1).replace("&amp;", "&")
    oldest = alice_client.get(url).content.decode()
    assert oldest.index('id="context-marker"') < oldest.index(f'id="msg-{messages[10].pk}"')


@pytest.mark.django_db
def test_a_bad_older_request_is_refused(alice_client, conversation, bob, provider):
    assert alice_client.get(f"/c/{conversation.code}/older/").status_code == 400
    assert alice_client.get(f"/c/{conversation.code}/older/?before=x").status_code == 400
    theirs = Conversation.objects.create(owner=bob, provider=provider)
    foreign = chain(theirs, 3)
    response = alice_client.get(f"/c/{conversation.code}/older/?before={foreign[-1].pk}")
    assert response.status_code == 200 and "msg-" not in response.content.decode()


@pytest.mark.django_db(transaction=True)
async def test_a_resync_sends_only_the_newest_page(alice, conversation):
    messages = await sync_to_async(chain)(conversation, 100)
    socket, connected, _ = await open_socket(alice, conversation.code)
    assert connected
    await socket.send(action="sync")
    html = await socket.receive_until('id="messages"')
    frame = next(f for f in socket.frames if 'id="messages"' in f)
    shown = [int(pk) for pk in re.findall(r'<article id="msg-(\d+)"', frame)]
    assert shown == [m.pk for m in messages[-library.PAGE_SIZE :]]
    assert "older-messages" in html
    await socket.close()


# -- titles named by the model ----------------------------------------------------------------------------------


def test_titles_are_cleaned():
    assert titles.clean_title('"Kyoto in Autumn."') == "Kyoto in Autumn"
    assert titles.clean_title("Title: **Budget travel**\nThis title sums it up.") == "Budget travel"
    assert titles.clean_title("<think>The user wants a title</think>\n  «Ramen guide» ") == "Ramen guide"
    assert titles.clean_title("标题：京都之旅。") == "京都之旅"
    assert titles.clean_title("one two three four five six seven eight nine ten eleven") == (
        "one two three four five six seven eight nine ten"
    )
    long = titles.clean_title("word" * 30 + " tail")
    assert len(long) <= titles.MAX_TITLE_CHARS
    assert titles.clean_title("   \n\n") == "" and titles.clean_title('""') == ""
    assert titles.clean_title("a\x00b\x1bc") == "abc"


async def first_exchange(alice, conversation, text):
    socket, connected, _ = await open_socket(alice, conversation.code)
    assert connected
    await socket.send(message=text)
    await socket.receive_until(DONE)
    return socket


@pytest.mark.django_db(transaction=True)
async def test_the_model_names_the_conversation_after_the_first_exchange(alice, conversation, fake):
    fake.push_title('"Kyoto autumn trip."')
    socket = await first_exchange(alice, conversation, "Plan a three day trip to Kyoto in autumn with a small budget")
    html = await socket.receive_until('value="Kyoto autumn trip"')  # pushed to the page: header...
    title_frame = next(f for f in socket.frames if 'value="Kyoto autumn trip"' in f)
    assert (
        'id="sidebar-list" hx-swap-oob="true"' in title_frame and ">Kyoto autumn trip</a>" in title_frame
    )  # ...and sidebar
    await titles.wait_idle()
    await conversation.arefresh_from_db()
    assert conversation.title == "Kyoto autumn trip"
    assert conversation.title_source == Conversation.TitleSource.MODEL

    chat, title = fake.completions()[0], fake.title_requests()[0]
    assert fake.requests.index(chat) < fake.requests.index(title)  # after the reply, not before
    assert title.body["model"] == "fake-model" and title.body["stream"] is False
    assert title.body["max_tokens"] == titles.MAX_TOKENS and title.body["user"] == chat.body["user"]
    assert title.body["messages"][0] == {"role": "system", "content": titles.TITLE_INSTRUCTION}
    assert title.body["messages"][1]["content"] == (
        "User: Plan a three day trip to Kyoto in autumn with a small budget\n\n"
        "Assistant: You said: Plan a three day trip to Kyoto in autumn with a small budget"
    )
    assert "You said" in html

    socket.frames.clear()
    await socket.send(message="And in winter?")
    await socket.receive_until(DONE)
    await titles.wait_idle()
    assert len(fake.title_requests()) == 1  # only after the first exchange
    await conversation.arefresh_from_db()
    assert conversation.title == "Kyoto autumn trip"
    await socket.close()


@pytest.mark.django_db(transaction=True)
async def test_a_provider_failure_keeps_the_first_words(alice, conversation, fake):
    fake.push_title(Reply(503, b'{"error": {"message": "overloaded"}}'))
    socket = await first_exchange(alice, conversation, "Plan a three day trip to Kyoto in autumn with a small budget")
    await titles.wait_idle()
    await conversation.arefresh_from_db()
    assert conversation.title == "Plan a three day trip to Kyoto in…"
    assert conversation.title_source == Conversation.TitleSource.WORDS
    assert len(fake.title_requests()) == 1
    await socket.send(message="second")
    await socket.receive_until("You said: second")
    await socket.receive_until(DONE)
    await titles.wait_idle()
    assert len(fake.title_requests()) == 1  # no second attempt
    await socket.close()


@pytest.mark.django_db(transaction=True)
async def test_an_empty_or_garbled_answer_keeps_the_first_words(alice, conversation, fake):
    fake.push_title(Reply(200, b'{"choices": []}'))
    socket = await first_exchange(alice, conversation, "Hello there model")
    await titles.wait_idle()
    await conversation.arefresh_from_db()
    assert (conversation.title, conversation.title_source) == ("Hello there model", "words")
    await socket.close()


@pytest.mark.django_db(transaction=True)
async def test_a_failed_reply_asks_for_no_title(alice, conversation, fake):
    fake.push(Reply(500, b'{"error": {"message": "boom"}}'))
    socket, _, _ = await open_socket(alice, conversation.code)
    await socket.send(message="Hello")
    await socket.receive_until('data-status="error"')
    await titles.wait_idle()
    assert fake.title_requests() == []
    await conversation.arefresh_from_db()
    assert conversation.title_source == Conversation.TitleSource.AUTO  # the next complete reply may name it
    await socket.close()


@pytest.mark.django_db(transaction=True)
async def test_a_title_the_user_typed_is_never_replaced(alice, conversation, fake):
    client = await sync_to_async(login_client)(alice)
    await sync_to_async(client.post)(f"/c/{conversation.code}/rename/", {"title": "My own title"})
    socket = await first_exchange(alice, conversation, "Tell me about Kyoto")
    await titles.wait_idle()
    assert fake.title_requests() == []  # renamed before: no request at all
    await conversation.arefresh_from_db()
    assert conversation.title == "My own title"
    await socket.close()


@pytest.mark.django_db(transaction=True)
async def test_a_rename_while_the_title_is_on_its_way_wins(alice, conversation, fake):
    fake.push_title("Model title", delay=0.5)
    socket = await first_exchange(alice, conversation, "Tell me about Kyoto")
    while not fake.title_requests():  # the request is on its way; the answer comes 0.5 s later
        await asyncio.sleep(0.01)
    client = await sync_to_async(login_client)(alice)
    await sync_to_async(client.post)(f"/c/{conversation.code}/rename/", {"title": "Renamed meanwhile"})
    await titles.wait_idle()
    assert len(fake.title_requests()) == 1  # the model did answer...
    await conversation.arefresh_from_db()
    assert (conversation.title, conversation.title_source) == ("Renamed meanwhile", "user")  # ...and lost
    assert not any("Model title" in f for f in socket.frames)
    await socket.close()
