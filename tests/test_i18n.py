"""English and Simplified Chinese: Accept-Language, the language switcher saved per user, the
websocket's fragments in the owner's language, and a catalogue that leaves nothing untranslated."""

import ast
import gettext as gnu_gettext
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client
from django.utils import translation

from conversations.models import Message, Profile

from .conftest import login_client
from .fake_provider import Reply

BASE_DIR = Path(settings.BASE_DIR)
PO_PATH = BASE_DIR / "locale" / "zh_Hans" / "LC_MESSAGES" / "django.po"
MO_PATH = PO_PATH.with_suffix(".mo")
ZH = "zh-hans"


@pytest.fixture(autouse=True)
def back_to_the_default_language():
    """A request or socket in these tests activates Chinese; later tests must not inherit it."""
    yield
    translation.deactivate()


def page(client, url, accept_language="") -> str:
    response = client.get(url, HTTP_ACCEPT_LANGUAGE=accept_language)
    assert response.status_code == 200
    return response.content.decode()


def html_lang(html: str) -> str:
    return re.search(r'<html lang="([^"]+)"', html).group(1)


def switch(client, language, next_url="/"):
    return client.post("/i18n/setlang/", {"language": language, "next": next_url})


def saved_language(user) -> str:
    return Profile.objects.filter(user=user).values_list("language", flat=True).first() or ""


async def open_socket(user, code, *, accept_language="", cookies=None):
    """The conversation socket through the real ASGI stack, with the browser's language headers."""
    from chatsite.asgi import application

    session_key = await sync_to_async(lambda: login_client(user).session.session_key)()
    jar = {settings.SESSION_COOKIE_NAME: session_key, **(cookies or {})}
    headers = [
        (b"origin", b"http://testserver"),
        (b"host", b"testserver"),
        (b"cookie", "; ".join(f"{k}={v}" for k, v in jar.items()).encode()),
    ]
    if accept_language:
        headers.append((b"accept-language", accept_language.encode()))
    communicator = WebsocketCommunicator(application, f"/ws/c/{code}/", headers=headers)
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    return communicator


async def frames_until(communicator, needle: str, timeout: float = 5.0) -> str:
    frames = []
    while not any(needle in frame for frame in frames):
        frames.append(await communicator.receive_from(timeout=timeout))
    return "".join(frames)


# -- pages --------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_login_page_follows_accept_language(client):
    chinese = page(client, "/accounts/login/", "zh-CN,zh;q=0.9,en;q=0.5")
    assert html_lang(chinese) == ZH
    assert "<h1>登录</h1>" in chinese and "用户名" in chinese and "Username" not in chinese
    english = page(Client(), "/accounts/login/", "en-GB,en;q=0.8")
    assert html_lang(english) == "en"
    assert "<h1>Log in</h1>" in english and "登录" not in english


@pytest.mark.django_db
def test_english_is_the_default_without_accept_language(client):
    html = page(client, "/accounts/login/")
    assert html_lang(html) == "en" and "<h1>Log in</h1>" in html


@pytest.mark.django_db
def test_the_signup_page_is_chinese_with_its_django_form_labels(client):
    html = page(client, "/signup/", ZH)
    assert "<h1>创建账号</h1>" in html
    assert "用户名" in html  # UserCreationForm's own label, from Django's catalogue


def test_the_conversation_page_follows_accept_language(alice_client, conversation):
    html = page(alice_client, f"/c/{conversation.code}/", ZH)
    assert html_lang(html) == ZH
    for text in ["+ 新聊天", ">发送</button>", "消息（Enter 发送，Shift+Enter 换行）", "退出登录", "导入对话"]:
        assert text in html, text
    assert ">Send</button>" not in html and "Log out" not in html
    english = page(alice_client, f"/c/{conversation.code}/", "en")
    assert ">Send</button>" in english and "发送" not in english


def test_a_message_on_the_page_is_labelled_in_chinese(alice_client, conversation):
    _, reply = conversation.add_exchange("你好", "fake-model")
    Message.objects.filter(pk=reply.pk).update(content="Hi", status="stopped", ttft_ms=12, duration_ms=340)
    html = page(alice_client, f"/c/{conversation.code}/", ZH)
    for text in [">你</div>", ">助手</div>", "已停止。", ">重试</button>", "首个 token 12 毫秒", "340 毫秒"]:
        assert text in html, text


def test_errors_from_python_are_translated_too(alice_client, conversation):
    response = alice_client.post(f"/c/{conversation.code}/rename/", {"title": "  "}, HTTP_ACCEPT_LANGUAGE=ZH)
    assert "标题不能为空。" in response.content.decode()


# -- the switcher -------------------------------------------------------------------------------


def test_the_switcher_is_on_the_chat_login_and_signup_pages(alice_client, conversation, client):
    for html in [
        page(alice_client, f"/c/{conversation.code}/"),
        page(client, "/accounts/login/"),
        page(client, "/signup/"),
    ]:
        form = re.search(r'<form class="language-form" method="post" action="/i18n/setlang/">.*?</form>', html, re.S)
        assert form, "no language switcher"
        form = form.group()
        assert 'name="csrfmiddlewaretoken"' in form
        assert '<label for="language-select">' in form and 'id="language-select" name="language"' in form
        assert '<option value="en" lang="en" selected>English</option>' in form
        assert '<option value="zh-hans" lang="zh-hans" >简体中文</option>' in form
        assert "语言" in form  # the label names itself in both languages


def test_the_switch_is_saved_and_wins_over_accept_language(alice, alice_client, conversation):
    url = f"/c/{conversation.code}/"
    response = switch(alice_client, ZH, url)
    assert response.status_code == 302 and response.url == url
    assert saved_language(alice) == ZH
    assert html_lang(page(alice_client, url, "en-US,en;q=0.9")) == ZH
    # Another browser of the same account (no language cookie) gets the saved choice too.
    elsewhere = login_client(alice)
    html = page(elsewhere, url, "en-US,en;q=0.9")
    assert html_lang(html) == ZH and ">发送</button>" in html
    # Switching back is saved the same way.
    switch(alice_client, "en", url)
    assert saved_language(alice) == "en"
    assert html_lang(page(elsewhere, url, "zh-CN")) == "en"


def test_a_user_who_never_switched_follows_the_browser(alice, alice_client, conversation):
    assert html_lang(page(alice_client, f"/c/{conversation.code}/", "zh-CN")) == ZH
    assert html_lang(page(alice_client, f"/c/{conversation.code}/", "en")) == "en"
    assert saved_language(alice) == ""


def test_an_unknown_language_is_not_saved(alice, alice_client):
    switch(alice_client, "xx-klingon")
    switch(alice_client, "fr")
    assert saved_language(alice) == ""
    assert not Profile.objects.filter(user=alice).exists()


def test_the_switch_updates_an_existing_profile(alice, alice_client):
    Profile.objects.create(user=alice, tokens_per_day=500)
    switch(alice_client, ZH)
    profile = Profile.objects.get(user=alice)
    assert (profile.language, profile.tokens_per_day) == (ZH, 500)


def test_the_switch_needs_a_csrf_token(alice):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert switch(client, ZH).status_code == 403
    assert saved_language(alice) == ""


def test_the_switch_refuses_get(alice_client):
    assert alice_client.get("/i18n/setlang/?language=zh-hans").status_code == 405


def test_the_switch_does_not_redirect_off_site(alice_client):
    response = switch(alice_client, ZH, "https://evil.example/")
    assert response.status_code == 302 and not response.url.startswith("https://evil.example")


@pytest.mark.django_db
def test_an_anonymous_switch_sets_the_cookie_which_beats_accept_language(client):
    response = switch(client, ZH, "/accounts/login/")
    assert response.cookies[settings.LANGUAGE_COOKIE_NAME].value == ZH
    assert html_lang(page(client, "/accounts/login/", "en")) == ZH
    assert not Profile.objects.exists()


def test_a_language_picked_before_logging_in_becomes_the_accounts(alice, client):
    switch(client, ZH, "/accounts/login/")
    response = client.post("/accounts/login/", {"username": "alice", "password": "alice-password-123"})
    assert response.status_code == 302
    assert saved_language(alice) == ZH


def test_logging_in_keeps_a_language_the_account_already_has(alice, client):
    Profile.objects.create(user=alice, language="en")
    switch(client, ZH, "/accounts/login/")
    client.post("/accounts/login/", {"username": "alice", "password": "alice-password-123"})
    assert saved_language(alice) == "en"
    assert html_lang(page(client, "/accounts/login/", "zh-CN")) == "en"  # signed in: the account's choice


# -- the websocket ------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_a_socket_notice_follows_accept_language(alice, conversation):
    socket = await open_socket(alice, conversation.code, accept_language="zh-CN,zh;q=0.9")
    await socket.send_to(text_data=json.dumps({"message": "   "}))
    html = await frames_until(socket, 'id="notices"')
    assert "请先输入消息。" in html and "Type a message first" not in html
    await socket.disconnect()
    socket = await open_socket(alice, conversation.code, accept_language="en")
    await socket.send_to(text_data="not json")
    assert "That message could not be read." in await frames_until(socket, 'id="notices"')
    await socket.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_provider_error_is_saved_and_shown_in_the_owners_language(alice, conversation, fake):
    fake.push(Reply(500, b'{"error": {"message": "upstream exploded"}}'))
    socket = await open_socket(alice, conversation.code, accept_language=ZH)
    await socket.send_to(text_data=json.dumps({"message": "hello?"}))
    html = await frames_until(socket, 'data-status="error"')
    assert "服务商发生内部错误（HTTP 500）。 upstream exploded" in html
    assert "重试" in html and ">你</div>" in html  # the message partial rendered by the socket
    reply = await conversation.messages.aget(role="assistant")
    assert reply.error == "服务商发生内部错误（HTTP 500）。 upstream exploded"
    await socket.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_the_saved_choice_wins_on_the_socket(alice, conversation):
    await Profile.objects.acreate(user=alice, language=ZH)
    socket = await open_socket(alice, conversation.code, accept_language="en-US,en;q=0.9")
    first = await socket.receive_from(timeout=5)  # the composer's buttons, rendered by the socket
    assert ">发送</button>" in first
    await socket.send_to(text_data=json.dumps({"message": ""}))
    assert "请先输入消息。" in await frames_until(socket, 'id="notices"')
    await socket.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_the_language_cookie_counts_on_the_socket(alice, conversation):
    socket = await open_socket(
        alice, conversation.code, accept_language="en", cookies={settings.LANGUAGE_COOKIE_NAME: ZH}
    )
    assert ">发送</button>" in await socket.receive_from(timeout=5)
    await socket.disconnect()


# -- the catalogue ------------------------------------------------------------------------------


PO_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}


def _unquote(quoted: str) -> str:
    """The text of one quoted .po string ("a \\"b\\"\\n" -> a "b" and a new line)."""
    assert quoted.startswith('"') and quoted.endswith('"'), quoted
    return re.sub(r"\\(.)", lambda m: PO_ESCAPES.get(m.group(1), m.group(1)), quoted[1:-1])


def read_po(path: Path) -> list[dict]:
    """The entries of a .po file (not its header): msgctxt, msgid, msgid_plural, msgstr (a list), flags."""
    entries: list[dict] = []
    entry: dict | None = None
    field: tuple[str, int] = ("", 0)
    for line in [*path.read_text(encoding="utf-8").splitlines(), ""]:
        line = line.strip()
        if not line:
            if entry is not None and entry["msgid"]:
                entries.append({**entry, "msgstr": [entry["msgstr"][i] for i in sorted(entry["msgstr"])]})
            entry = None
            continue
        if line.startswith("#~"):
            continue  # obsolete: not compiled
        if entry is None:
            entry = {"flags": set(), "msgctxt": "", "msgid": "", "msgid_plural": "", "msgstr": {}}
        if line.startswith("#,"):
            entry["flags"].update(flag.strip() for flag in line[2:].split(","))
        elif line.startswith("#"):
            continue
        elif line.startswith('"'):
            name, index = field
            if name == "msgstr":
                entry["msgstr"][index] += _unquote(line)
            else:
                entry[name] += _unquote(line)
        else:
            keyword, rest = line.split(" ", 1)
            plural_form = re.fullmatch(r"msgstr\[(\d+)\]", keyword)
            field = ("msgstr", int(plural_form.group(1))) if plural_form else (keyword, 0)
            if field[0] == "msgstr":
                entry["msgstr"][field[1]] = _unquote(rest)
            else:
                entry[keyword] = _unquote(rest)
    return entries


PLACEHOLDER = re.compile(r"%(?:\([^)]+\))?[-#0 +]*\d*(?:\.\d+)?[sdrfi]")


def test_every_message_of_the_catalogue_is_translated():
    entries = read_po(PO_PATH)
    assert len(entries) > 400
    fuzzy = [e["msgid"] for e in entries if "fuzzy" in e["flags"]]
    untranslated = [e["msgid"] for e in entries if not all(s.strip() for s in e["msgstr"]) or not e["msgstr"]]
    assert fuzzy == [], f"fuzzy entries: {fuzzy}"
    assert untranslated == [], f"untranslated entries: {untranslated}"
    assert "#, fuzzy" not in PO_PATH.read_text(encoding="utf-8")  # the header too


def test_translations_keep_every_placeholder():
    for entry in read_po(PO_PATH):
        # Chinese has one plural form: it carries the placeholders of the English plural.
        expected = sorted(PLACEHOLDER.findall(entry["msgid_plural"] or entry["msgid"]))
        for msgstr in entry["msgstr"]:
            assert sorted(PLACEHOLDER.findall(msgstr)) == expected, (entry["msgid"], msgstr)


def test_the_compiled_catalogue_matches_the_po_file():
    """The .mo in the tree is what runs (a fresh machine has no gettext tools): it must be current."""
    with MO_PATH.open("rb") as mo:
        catalogue = gnu_gettext.GNUTranslations(mo)
    for entry in read_po(PO_PATH):
        key = f"{entry['msgctxt']}\x04{entry['msgid']}" if entry["msgctxt"] else entry["msgid"]
        plural = entry["msgid_plural"]
        got = catalogue.ngettext(key, plural, 2) if plural else catalogue.gettext(key)
        assert got == entry["msgstr"][0], f"{entry['msgid']!r}: the .mo says {got!r}; run compilemessages"


GETTEXT_CALLS = {"_", "gettext", "gettext_lazy", "gettext_noop", "ngettext", "ngettext_lazy"}
CONTEXT_CALLS = {"pgettext", "pgettext_lazy", "npgettext", "npgettext_lazy"}
TRANSLATE_TAG = re.compile(r"""{%\s*(?:translate|trans)\s+(["'])(.*?)\1(\s+context\s+(["'])(.*?)\4)?[^%]*%}""", re.S)
BLOCK_TAG = re.compile(
    r"{%\s*(?:blocktranslate|blocktrans)\b(.*?)%}(.*?){%\s*end(?:blocktranslate|blocktrans)\s*%}", re.S
)
FILTER_ARG = re.compile(r"""_\((["'])(.*?)\1\)""")


def source_messages() -> set[tuple[str, str]]:
    """(context, msgid) of every literal message in the project's Python and templates."""
    found = set()
    for path in (BASE_DIR / "conversations").rglob("*.py"):
        if "migrations" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
            args = [a.value if isinstance(a, ast.Constant) and isinstance(a.value, str) else None for a in node.args]
            if name in GETTEXT_CALLS and args[0] is not None:
                found.add(("", args[0]))
            elif name in CONTEXT_CALLS and len(args) > 1 and None not in args[:2]:
                found.add((args[0], args[1]))
    for path in (BASE_DIR / "templates").rglob("*.html"):
        source = path.read_text(encoding="utf-8")
        source = re.sub(r"{%\s*comment\s*%}.*?{%\s*endcomment\s*%}", "", source, flags=re.S)
        for match in TRANSLATE_TAG.finditer(source):
            found.add((match.group(5) or "", match.group(2)))
        for match in FILTER_ARG.finditer(source):
            found.add(("", match.group(2)))
        for match in BLOCK_TAG.finditer(source):
            options, body = match.groups()
            body = re.split(r"{%\s*plural\s*%}", body)[0]
            body = body.replace("%", "%%")
            body = re.sub(r"{{\s*(\w+)\s*}}", r"%(\1)s", body)
            if "trimmed" in options.split():
                body = translation.trim_whitespace(body)
            context = re.search(r"""context\s+(["'])(.*?)\1""", options)
            found.add((context.group(2) if context else "", body))
    return found


def test_every_message_in_the_source_is_in_the_catalogue():
    """New strings need `makemessages -l zh_Hans` (see docs/i18n.md), a translation and `compilemessages`."""
    catalogue = {(e["msgctxt"], e["msgid"]) for e in read_po(PO_PATH)}
    missing = sorted(source_messages() - catalogue)
    assert missing == [], f"not in locale/zh_Hans/LC_MESSAGES/django.po: {missing}"


# -- templates: no visible English outside translate tags ---------------------------------------

# Attributes a person reads or hears (screen readers read aria-label and title).
TEXT_ATTRIBUTES = {"title", "placeholder", "aria-label", "alt", "hx-confirm", "aria-valuetext", "aria-roledescription"}
# Their content is code, a key name or a unit, not prose.
SKIPPED_ELEMENTS = {"script", "style", "code", "kbd", "pre", "samp"}
UNITS = {"ms"}
LETTERS = re.compile(r"[A-Za-z]{2,}")


def _visible_words(text: str) -> bool:
    return any(word not in UNITS for word in LETTERS.findall(text))


def _looks_like_code(value: str) -> bool:
    """A placeholder that shows a JSON example or an identifier, such as `answer`."""
    value = value.strip()
    return value.startswith(("{", "[")) or re.fullmatch(r"[a-z_][a-z0-9_]*", value) is not None


def strip_template_syntax(source: str) -> str:
    source = re.sub(r"{%\s*comment\s*%}.*?{%\s*endcomment\s*%}", " ", source, flags=re.S)
    source = re.sub(r"{#.*?#}", " ", source, flags=re.S)
    source = BLOCK_TAG.sub(" ", source)
    source = re.sub(r"{%.*?%}", "", source, flags=re.S)
    return re.sub(r"{{.*?}}", "", source, flags=re.S)


class EnglishFinder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.skipping = 0
        self.found: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in SKIPPED_ELEMENTS:
            self.skipping += 1
        attributes = dict(attrs)
        for name, value in attrs:
            shown = name in TEXT_ATTRIBUTES or (name == "value" and attributes.get("type") in ("submit", "button"))
            if shown and value and _visible_words(value) and not _looks_like_code(value):
                self.found.append(f"line {self.getpos()[0]}: {name}={value!r}")

    def handle_endtag(self, tag):
        if tag in SKIPPED_ELEMENTS and self.skipping:
            self.skipping -= 1

    def handle_data(self, data):
        if not self.skipping and _visible_words(data):
            self.found.append(f"line {self.getpos()[0]}: {data.strip()!r}")


def english_outside_translate_tags(source: str) -> list[str]:
    finder = EnglishFinder()
    finder.feed(strip_template_syntax(source))
    finder.close()
    # A literal default shown to the reader: {{ x|default:"New chat" }} instead of default:_("New chat").
    literals = re.findall(r"""\|default(?:_if_none)?:(["'])([^"']*[A-Za-z]{2,}[^"']*)\1""", source)
    return finder.found + [f"|default:{text!r}" for _, text in literals if not re.fullmatch(r"[a-z0-9_-]+", text)]


def test_the_checker_finds_english_outside_translate_tags():
    assert english_outside_translate_tags("<p>Hello there</p>")
    assert english_outside_translate_tags('<button aria-label="Close">×</button>')
    assert english_outside_translate_tags('<input placeholder="Type here">')
    assert english_outside_translate_tags('{{ title|default:"New chat" }}')
    assert english_outside_translate_tags("{% if x %}<span>Saved</span>{% endif %}")
    assert not english_outside_translate_tags('{% load i18n %}<p>{% translate "Hello there" %}</p>')
    assert not english_outside_translate_tags("{% blocktranslate %}Hi {{ name }}{% endblocktranslate %}")
    assert not english_outside_translate_tags("<p title=\"{% translate 'Close' %}\">{{ user.username }} · 42 ms</p>")
    assert not english_outside_translate_tags("<code>max_tokens</code>{# a comment in English #}")
    assert not english_outside_translate_tags('<input placeholder=\'{"type": "object"}\'>{{ x|default:_("New") }}')


def test_templates_show_no_english_outside_translate_tags():
    problems = {}
    for path in sorted((BASE_DIR / "templates").rglob("*.html")):
        found = english_outside_translate_tags(path.read_text(encoding="utf-8"))
        if found:
            problems[str(path.relative_to(BASE_DIR))] = found
    assert problems == {}
