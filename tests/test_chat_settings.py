"""The settings panel, presets and admin defaults, end to end.

Settings go in through a real HTTP POST to the panel's view; a message then goes over a real
websocket, and the tests read what the fake provider received in its HTTP request body.
"""

import asyncio
import html
import json
import re

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model

from conversations.models import Conversation, Message, Preset, ProviderModel

from .conftest import login_client, open_socket
from .fake_provider import Stream, chunk, sse

pytestmark = pytest.mark.django_db(transaction=True)

# Every chat request has these; a parameter the user did not set must not be among the rest.
ALWAYS = {"model", "messages", "stream", "stream_options", "user"}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
LOOKUP = {"type": "function", "function": {"name": "lookup"}}
SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}


def settings_url(conversation) -> str:
    return f"/c/{conversation.code}/settings/"


def post_settings(client, conversation, data):
    return client.post(settings_url(conversation), data, HTTP_HX_REQUEST="true")


async def send_and_wait(user, conversation, text="Hello", timeout=10.0):
    """Send a message over the conversation's websocket; wait until no reply is streaming."""
    socket, connected, _ = await open_socket(user, conversation.code)
    assert connected
    await socket.send(message=text)
    await socket.receive_until("msg-assistant")
    for _ in range(int(timeout / 0.05)):
        if not await Message.objects.filter(conversation=conversation, status="streaming").aexists():
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the reply never finished")
    await socket.close()


def error_slot(page: str, field_id: str) -> str:
    match = re.search(rf'id="{field_id}-error"[^>]*>(.*?)</p>', page, re.DOTALL)
    assert match, f"no error slot for {field_id}"
    return html.unescape(match.group(1)).strip()


# -- every parameter reaches the provider exactly as set ---------------------------------------

CASES = [
    ("temperature", {"temperature": "0.3"}, {"temperature": 0.3}),
    ("top_p", {"top_p": "0.85"}, {"top_p": 0.85}),
    ("max_tokens", {"max_tokens": "64"}, {"max_tokens": 64}),
    ("stop", {"stop": ["END", r"\n\n", "", ""]}, {"stop": ["END", "\n\n"]}),
    ("presence_penalty", {"presence_penalty": "-1.5"}, {"presence_penalty": -1.5}),
    ("frequency_penalty", {"frequency_penalty": "1.25"}, {"frequency_penalty": 1.25}),
    ("seed", {"seed": "1234"}, {"seed": 1234}),
    ("n", {"n": "3"}, {"n": 3}),
    ("logit_bias as JSON", {"logit_bias": '{"50256": -100, "13": 7}'}, {"logit_bias": {"50256": -100, "13": 7}}),
    ("logit_bias as rows", {"logit_bias": "50256: -100\n13 7"}, {"logit_bias": {"50256": -100, "13": 7}}),
    ("response_format text", {"response_format": "text"}, {"response_format": {"type": "text"}}),
    ("response_format json_object", {"response_format": "json_object"}, {"response_format": {"type": "json_object"}}),
    (
        "response_format json_schema",
        {
            "response_format": "json_schema",
            "json_schema_name": "answer",
            "json_schema": json.dumps(SCHEMA),
            "json_schema_strict": "on",
        },
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": SCHEMA, "strict": True},
            }
        },
    ),
    ("tools", {"tools": json.dumps([WEATHER, LOOKUP])}, {"tools": [WEATHER, LOOKUP]}),
    (
        "tool_choice none",
        {"tools": json.dumps([WEATHER]), "tool_choice": "none"},
        {"tools": [WEATHER], "tool_choice": "none"},
    ),
    (
        "tool_choice auto",
        {"tools": json.dumps([WEATHER]), "tool_choice": "auto"},
        {"tools": [WEATHER], "tool_choice": "auto"},
    ),
    (
        "tool_choice required",
        {"tools": json.dumps([WEATHER]), "tool_choice": "required"},
        {"tools": [WEATHER], "tool_choice": "required"},
    ),
    (
        "tool_choice function",
        {"tools": json.dumps([WEATHER, LOOKUP]), "tool_choice": "function:lookup"},
        {"tools": [WEATHER, LOOKUP], "tool_choice": {"type": "function", "function": {"name": "lookup"}}},
    ),
    ("logprobs", {"logprobs": "on"}, {"logprobs": True}),
    ("top_logprobs", {"logprobs": "on", "top_logprobs": "5"}, {"logprobs": True, "top_logprobs": 5}),
]


@pytest.mark.parametrize(("data", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_each_parameter_set_in_the_panel_reaches_the_provider_exactly(
    alice, alice_client, conversation, fake, data, expected
):
    response = await sync_to_async(post_settings)(alice_client, conversation, data)
    assert response.status_code == 200
    page = response.content.decode()
    assert "Saved" in page and "Not saved" not in page
    await conversation.arefresh_from_db()
    assert conversation.params == expected
    if expected.get("n", 1) > 1:
        # A provider that honours n streams every choice.
        fake.push(Stream(sse([chunk(f"choice {i}", index=i) for i in range(expected["n"])] + [chunk(finish="stop")])))

    await send_and_wait(alice, conversation)

    body = fake.completions()[0].body
    assert set(body) - ALWAYS == set(expected)  # nothing the user did not set
    assert {name: body[name] for name in expected} == expected
    assert body["messages"] == [{"role": "user", "content": "Hello"}]


async def test_with_nothing_set_only_the_essentials_are_sent(alice, conversation, fake):
    await send_and_wait(alice, conversation)
    body = fake.completions()[0].body
    assert set(body) == ALWAYS
    assert len(body["user"]) == 32 and str(alice.pk) != body["user"]  # a stable, non-reversible id


async def test_the_system_prompt_set_in_the_panel_is_sent_first(alice, alice_client, conversation, fake):
    data = {"system_prompt": "  Answer like a pirate.  ", "temperature": "0.2"}
    await sync_to_async(post_settings)(alice_client, conversation, data)
    await send_and_wait(alice, conversation)
    body = fake.completions()[0].body
    assert body["messages"][0] == {"role": "system", "content": "Answer like a pirate."}
    assert body["temperature"] == 0.2


async def test_clearing_a_field_stops_sending_it(alice, alice_client, conversation, fake):
    await sync_to_async(post_settings)(alice_client, conversation, {"temperature": "0.3", "seed": "5"})
    await sync_to_async(post_settings)(alice_client, conversation, {"temperature": "", "seed": "5"})
    await send_and_wait(alice, conversation)
    body = fake.completions()[0].body
    assert body["seed"] == 5 and "temperature" not in body


async def test_settings_that_no_longer_pass_are_not_sent(alice, conversation, fake):
    conversation.params = {"temperature": 7, "seed": 1}  # written behind the panel's back
    await conversation.asave()
    await send_and_wait(alice, conversation)
    reply = await Message.objects.aget(conversation=conversation, role="assistant")
    assert reply.status == "error"
    assert "temperature" in reply.error and "Settings" in reply.error
    assert fake.completions() == []  # nothing went to the provider
    assert await Message.objects.filter(conversation=conversation, role="user").aexists()  # the message is kept


# -- bad values: an inline message, nothing saved, the input kept ------------------------------

SAVED = {"temperature": 0.5, "seed": 9}

BAD = [
    ("temperature", {"temperature": "hot"}, "param-temperature", "Enter a number", "hot"),
    ("temperature", {"temperature": "2.5"}, "param-temperature", "from 0 to 2", "2.5"),
    ("top_p", {"top_p": "1.2"}, "param-top_p", "from 0 to 1", "1.2"),
    ("max_tokens", {"max_tokens": "0"}, "param-max_tokens", "at least 1", "0"),
    ("max_tokens", {"max_tokens": "12.5"}, "param-max_tokens", "whole number", "12.5"),
    ("stop", {"stop": ["a", "b", "c", "d", "e"]}, "param-stop", "At most 4", "d"),
    ("presence_penalty", {"presence_penalty": "-3"}, "param-presence_penalty", "from -2 to 2", "-3"),
    ("frequency_penalty", {"frequency_penalty": "often"}, "param-frequency_penalty", "Enter a number", "often"),
    ("seed", {"seed": "4.2"}, "param-seed", "whole number", "4.2"),
    ("n", {"n": "9"}, "param-n", "from 1 to 8", "9"),
    ("logit_bias", {"logit_bias": "50256: -101"}, "param-logit_bias", "-100 to 100", "50256: -101"),
    ("logit_bias", {"logit_bias": '{"50256": -100'}, "param-logit_bias", "not valid JSON", '{"50256": -100'),
    ("response_format", {"response_format": "xml"}, "param-response_format", "Choose text", None),
    (
        "json_schema name",
        {"response_format": "json_schema", "json_schema_name": "my schema", "json_schema": "{}"},
        "param-json_schema_name",
        "letters, digits",
        "my schema",
    ),
    (
        "json_schema",
        {"response_format": "json_schema", "json_schema_name": "answer", "json_schema": '["not", "an object"]'},
        "param-json_schema",
        "JSON object",
        '["not", "an object"]',
    ),
    ("tools", {"tools": '[{"type": "function", "function": {}}]'}, "param-tools", "letters, digits", '"function": {}'),
    ("tools", {"tools": "[{oops"}, "param-tools", "not valid JSON", "[{oops"),
    ("tool_choice", {"tool_choice": "auto"}, "param-tool_choice", "Define at least one tool", None),
    (
        "tool_choice",
        {"tools": json.dumps([WEATHER]), "tool_choice": "function:missing"},
        "param-tool_choice",
        "no tool named “missing”",
        None,
    ),
    ("logprobs", {"logprobs": "maybe"}, "param-logprobs", "Tick the box", None),
    ("top_logprobs", {"top_logprobs": "3"}, "param-top_logprobs", "Log probabilities", "3"),
    ("top_logprobs", {"logprobs": "on", "top_logprobs": "25"}, "param-top_logprobs", "from 0 to 20", "25"),
]


@pytest.mark.parametrize(("data", "field_id", "message", "typed"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_a_bad_value_is_explained_inline_and_nothing_is_saved(
    alice_client, conversation, data, field_id, message, typed
):
    Conversation.objects.filter(pk=conversation.pk).update(params=SAVED, system_prompt="Old prompt")
    # Another field changed at the same time is not saved either: the form is saved whole or not at all.
    other = "max_tokens" if "seed" in data else "seed"
    response = post_settings(alice_client, conversation, {**data, other: "10", "system_prompt": "New prompt"})
    assert response.status_code == 200
    page = response.content.decode()
    assert message in error_slot(page, field_id)
    assert "Not saved" in page
    conversation.refresh_from_db()
    assert conversation.params == SAVED and conversation.system_prompt == "Old prompt"
    if typed is not None:
        assert html.escape(typed) in page  # what was typed comes back, not the saved value
    assert 'value="10"' in page and "New prompt" in page


def test_an_overlong_system_prompt_is_refused(alice_client, conversation, settings):
    settings.MAX_MESSAGE_CHARS = 50
    response = post_settings(alice_client, conversation, {"system_prompt": "x" * 51})
    assert "the limit is 50" in error_slot(response.content.decode(), "param-system_prompt")
    conversation.refresh_from_db()
    assert conversation.system_prompt == ""


def test_the_response_swaps_in_only_the_status_and_messages(alice_client, conversation):
    page = post_settings(alice_client, conversation, {"temperature": "9"}).content.decode()
    swapped = re.findall(r'<(\w+) id="([^"]+)"[^>]*hx-swap-oob="true"', page)
    kinds = {tag for tag, _id in swapped}
    assert kinds <= {"p", "span"}  # never an input, so typing elsewhere is never overwritten
    ids = {i for _tag, i in swapped}
    assert {"settings-status", "param-temperature-error", "param-tool_choice-control"} <= ids


def test_the_page_shows_the_saved_settings(alice_client, conversation):
    params = {
        "temperature": 0.4,
        "stop": ["\n", "END"],
        "logit_bias": {"50256": -100},
        "tools": [WEATHER],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "logprobs": True,
    }
    Conversation.objects.filter(pk=conversation.pk).update(params=params, system_prompt="Be brief.")
    page = alice_client.get(f"/c/{conversation.code}/").content.decode()
    assert 'id="settings-drawer"' in page and 'id="param-temperature"' in page
    assert 'value="0.4"' in page
    assert 'id="param-stop-1" name="stop" value="\\n"' in page and 'value="END"' in page
    assert "Be brief." in page
    assert '<option value="function:get_weather" selected>' in page
    assert re.search(r'id="param-logprobs" name="logprobs" value="on"\s+checked', page)
    # What the page shows, posted back unchanged, saves the same settings.
    assert post_settings(alice_client, conversation, form_data_of(page)).status_code == 200
    conversation.refresh_from_db()
    assert conversation.params == params


def form_data_of(page: str) -> dict:
    """The settings form's fields as a browser would post them (enough for this page)."""
    form = page[page.index('id="settings-form"') : page.index("</form>", page.index('id="settings-form"'))]
    data: dict[str, list[str]] = {}
    for tag in re.finditer(r"<input [^>]*>", form):
        attrs = dict(re.findall(r'(\w[\w-]*)="([^"]*)"', tag.group(0)))
        if attrs.get("type") == "checkbox" and " checked" not in tag.group(0):
            continue
        data.setdefault(attrs["name"], []).append(html.unescape(attrs.get("value", "")))
    for match in re.finditer(r'<textarea [^>]*name="([^"]+)"[^>]*>(.*?)</textarea>', form, re.DOTALL):
        data.setdefault(match.group(1), []).append(html.unescape(match.group(2)))
    for match in re.finditer(r'<select [^>]*name="([^"]+)"[^>]*>(.*?)</select>', form, re.DOTALL):
        chosen = re.search(r'<option value="([^"]*)" selected>', match.group(2))
        data[match.group(1)] = [html.unescape(chosen.group(1)) if chosen else ""]
    return data


# -- who may change what ------------------------------------------------------------------------


def test_a_stranger_cannot_change_or_use_anothers_settings(bob_client, alice, conversation):
    Conversation.objects.filter(pk=conversation.pk).update(params={"seed": 1})
    preset = Preset.objects.create(owner=alice, name="Alice's", params={"seed": 2})
    code = conversation.code
    for url in [f"/c/{code}/settings/", f"/c/{code}/presets/", f"/c/{code}/presets/{preset.pk}/use/"]:
        assert bob_client.post(url, {"seed": "3", "name": "stolen"}).status_code == 404
    assert bob_client.post(f"/c/{code}/presets/{preset.pk}/delete/").status_code == 404
    conversation.refresh_from_db()
    assert conversation.params == {"seed": 1}
    assert list(Preset.objects.values_list("owner__username", "name")) == [("alice", "Alice's")]


def test_anothers_presets_are_invisible_and_unusable(bob, bob_client, alice, provider):
    preset = Preset.objects.create(owner=alice, name="Secret recipe", params={"seed": 2})
    mine = Conversation.objects.create(owner=bob, provider=provider, model="fake-model")
    page = bob_client.get(f"/c/{mine.code}/").content.decode()
    assert "Secret recipe" not in page and 'id="new-chat-preset"' not in page
    assert bob_client.post(f"/c/{mine.code}/presets/{preset.pk}/use/").status_code == 404
    assert bob_client.post(f"/c/{mine.code}/presets/{preset.pk}/delete/").status_code == 404
    assert bob_client.post("/c/new/", {"preset": str(preset.pk)}).status_code == 404
    mine.refresh_from_db()
    assert mine.params == {}
    assert Preset.objects.filter(pk=preset.pk).exists()


def test_settings_need_a_login_and_a_post(client, alice_client, conversation):
    response = client.post(settings_url(conversation), {"seed": "1"})
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    assert alice_client.get(settings_url(conversation)).status_code == 405


# -- presets ----------------------------------------------------------------------------------


def test_save_list_replace_and_delete_a_preset(alice, alice_client, conversation):
    post_settings(alice_client, conversation, {"temperature": "0.2", "stop": ["###"], "system_prompt": "Be a poet."})
    response = alice_client.post(f"/c/{conversation.code}/presets/", {"name": "  Poet  "}, HTTP_HX_REQUEST="true")
    page = response.content.decode()
    assert "Saved “Poet”." in page and '<span class="preset-name">Poet</span>' in page
    preset = alice.presets.get()
    assert (preset.name, preset.model, preset.system_prompt) == ("Poet", "fake-model", "Be a poet.")
    assert preset.params == {"temperature": 0.2, "stop": ["###"]} and preset.provider_id == conversation.provider_id

    post_settings(alice_client, conversation, {"temperature": "0.9"})
    page = alice_client.post(f"/c/{conversation.code}/presets/", {"name": "Poet"}).content.decode()
    assert "Updated “Poet”." in page
    preset.refresh_from_db()
    assert preset.params == {"temperature": 0.9} and alice.presets.count() == 1

    page = alice_client.post(f"/c/{conversation.code}/presets/{preset.pk}/delete/").content.decode()
    assert "Deleted “Poet”." in page and "No presets yet." in page
    assert not alice.presets.exists()


def test_a_preset_needs_a_name(alice, alice_client, conversation):
    page = alice_client.post(f"/c/{conversation.code}/presets/", {"name": "   "}).content.decode()
    assert "Give the preset a name." in page
    page = alice_client.post(f"/c/{conversation.code}/presets/", {"name": "p" * 101}).content.decode()
    assert "at most 100 characters" in page and 'value="' + "p" * 101 + '"' in page
    assert not alice.presets.exists()


async def test_a_preset_chosen_for_a_new_chat_is_what_gets_sent(alice, alice_client, provider, fake):
    preset = await Preset.objects.acreate(
        owner=alice,
        name="Terse",
        provider=provider,
        model="fake-model-2",
        system_prompt="One word answers.",
        params={"temperature": 0.1, "max_tokens": 5},
    )
    page = (await sync_to_async(alice_client.get)("/", follow=True)).content.decode()
    assert f'<option value="{preset.pk}">Terse</option>' in page  # offered next to New chat
    response = await sync_to_async(alice_client.post)("/c/new/", {"preset": str(preset.pk)})
    assert response.status_code == 302
    conversation = await Conversation.objects.aget(code=response["Location"].split("/")[2])
    await send_and_wait(alice, conversation)
    body = fake.completions()[0].body
    assert body["model"] == "fake-model-2"
    assert body["messages"][0] == {"role": "system", "content": "One word answers."}
    assert set(body) - ALWAYS == {"temperature", "max_tokens"}
    assert (body["temperature"], body["max_tokens"]) == (0.1, 5)


def test_using_a_preset_on_a_conversation_reloads_it_with_those_settings(alice, alice_client, conversation):
    preset = Preset.objects.create(owner=alice, name="Seeded", model="fake-model-2", params={"seed": 77})
    response = alice_client.post(f"/c/{conversation.code}/presets/{preset.pk}/use/", HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and response["HX-Refresh"] == "true"
    conversation.refresh_from_db()
    assert conversation.params == {"seed": 77}
    assert conversation.model == "fake-model"  # a preset without a provider keeps the conversation's model


def test_a_preset_whose_settings_broke_is_not_used(alice, alice_client, conversation):
    Conversation.objects.filter(pk=conversation.pk).update(params={"seed": 1})
    preset = Preset.objects.create(owner=alice, name="Old", params={"temperature": 5})
    page = alice_client.post(f"/c/{conversation.code}/presets/{preset.pk}/use/").content.decode()
    assert "no longer valid" in page and "temperature" in page
    conversation.refresh_from_db()
    assert conversation.params == {"seed": 1}


# -- admin defaults per model -----------------------------------------------------------------


@pytest.fixture
def admin_client(db):
    admin = get_user_model().objects.create_superuser("root", password="root-password-123")
    return login_client(admin)


def admin_form(provider, default_params: str, system_prompt: str = "") -> dict:
    return {
        "name": provider.name,
        "base_url": provider.base_url,
        "api_key": "",
        "enabled": "on",
        "is_default": "on",
        "default_model": provider.default_model,
        "context_length": "8192",
        "models-TOTAL_FORMS": "1",
        "models-INITIAL_FORMS": "0",
        "models-0-name": "fake-model",
        "models-0-context_length": "4096",
        "models-0-default_params": default_params,
        "models-0-default_system_prompt": system_prompt,
    }


def test_the_admin_sets_checked_defaults_per_model(admin_client, provider):
    url = f"/admin/conversations/provider/{provider.pk}/change/"
    page = admin_client.post(url, admin_form(provider, '{"temperature": 9, "colour": "red"}')).content.decode()
    assert "temperature: Enter a number from 0 to 2." in html.unescape(page)
    assert "colour: colour is not a parameter" in html.unescape(page)
    assert not ProviderModel.objects.exists()

    response = admin_client.post(url, admin_form(provider, '{"temperature": 0.6, "stop": "END"}', "You are kind."))
    assert response.status_code == 302
    entry = ProviderModel.objects.get()
    assert entry.default_params == {"temperature": 0.6, "stop": ["END"]}
    assert entry.default_system_prompt == "You are kind."


async def test_a_new_chat_gets_the_admins_defaults_for_its_model(alice, alice_client, provider, fake):
    await ProviderModel.objects.acreate(
        provider=provider,
        name="fake-model",
        context_length=4096,
        default_params={"temperature": 0.6, "seed": 3},
        default_system_prompt="House rules.",
    )
    response = await sync_to_async(alice_client.post)("/c/new/")
    conversation = await Conversation.objects.aget(code=response["Location"].split("/")[2])
    assert conversation.params == {"temperature": 0.6, "seed": 3}
    await send_and_wait(alice, conversation)
    body = fake.completions()[0].body
    assert body["messages"][0] == {"role": "system", "content": "House rules."}
    assert set(body) - ALWAYS == {"temperature", "seed"}


def test_a_users_preset_wins_over_the_admins_defaults(alice, alice_client, provider):
    ProviderModel.objects.create(
        provider=provider, name="fake-model", context_length=4096, default_params={"temperature": 0.6}
    )
    preset = Preset.objects.create(owner=alice, name="Mine", provider=provider, model="fake-model", params={"seed": 8})
    response = alice_client.post("/c/new/", {"preset": str(preset.pk)})
    conversation = Conversation.objects.get(code=response["Location"].split("/")[2])
    assert conversation.params == {"seed": 8}


def test_switching_the_model_of_an_untouched_chat_takes_that_models_defaults(alice_client, conversation):
    ProviderModel.objects.create(
        provider=conversation.provider,
        name="fake-model-2",
        context_length=4096,
        default_params={"max_tokens": 100},
        default_system_prompt="Model two rules.",
    )
    response = alice_client.post(f"/c/{conversation.code}/model/", {"model": "fake-model-2"}, HTTP_HX_REQUEST="true")
    assert response["HX-Refresh"] == "true"
    conversation.refresh_from_db()
    assert (conversation.params, conversation.system_prompt) == ({"max_tokens": 100}, "Model two rules.")

    # Once the user has changed the settings, a model switch leaves them alone.
    post_settings(alice_client, conversation, {"max_tokens": "7"})
    alice_client.post(f"/c/{conversation.code}/model/", {"model": "fake-model"})
    alice_client.post(f"/c/{conversation.code}/model/", {"model": "fake-model-2"})
    conversation.refresh_from_db()
    assert conversation.params == {"max_tokens": 7}


# -- the real bundled model -------------------------------------------------------------------


@pytest.mark.bundled
async def test_seed_stop_and_max_tokens_reach_the_bundled_model(alice, bundled_provider):
    """Against llama-cpp-python: the same seed gives the same text; stop and max_tokens cut it."""
    client = await sync_to_async(login_client)(alice)
    question = "Tell me a short story about a cat who finds a key."

    async def reply_with(data) -> Message:
        conversation = await Conversation.objects.acreate(
            owner=alice, provider=bundled_provider, model="SmolLM2-135M-Instruct"
        )
        response = await sync_to_async(post_settings)(client, conversation, data)
        assert "Not saved" not in response.content.decode()
        await send_and_wait(alice, conversation, question, timeout=90)
        return await Message.objects.aget(conversation=conversation, role="assistant")

    sampled = {"temperature": "1.2", "seed": "4242", "max_tokens": "40"}
    first, second = await reply_with(sampled), await reply_with(sampled)
    assert first.status == second.status == "complete"
    assert first.content == second.content and len(first.content.split()) > 5
    other = await reply_with({**sampled, "seed": "99"})
    assert other.content != first.content  # the seed is what made them equal

    short = await reply_with({**sampled, "max_tokens": "8"})
    assert short.finish_reason == "length" and short.completion_tokens <= 8
    assert first.content.startswith(short.content.strip()[:10])

    # Stop at a word from the middle of the seeded reply: the same reply, cut just before it.
    words = first.content.split()
    stop = " " + words[len(words) // 2]
    cut = first.content.index(stop)
    stopped = await reply_with({**sampled, "stop": [stop]})
    assert stopped.finish_reason == "stop"
    assert stopped.content == first.content[:cut]
