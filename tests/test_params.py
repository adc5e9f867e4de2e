"""The parameter table and its rules (conversations/providers/params.py), without a server."""

import json

import pytest

from conversations.providers import params as P


def ok(data, mode=P.CHAT):
    result = P.validate(data, mode)
    assert result.errors == {}, result.errors
    return result.params


def error(data, field, mode=P.CHAT):
    result = P.validate(data, mode)
    assert field in result.errors, result.errors
    assert result.params == {}  # all or nothing
    return str(result.errors[field])


def test_the_table_has_every_parameter_of_both_endpoints():
    assert [p.name for p in P.params_for(P.CHAT)] == [
        "temperature",
        "top_p",
        "max_tokens",
        "stop",
        "presence_penalty",
        "frequency_penalty",
        "seed",
        "n",
        "logit_bias",
        "response_format",
        "tools",
        "tool_choice",
        "logprobs",
        "top_logprobs",
    ]
    assert P.names_for(P.COMPLETION) == {
        "temperature",
        "top_p",
        "max_tokens",
        "stop",
        "presence_penalty",
        "frequency_penalty",
        "seed",
        "n",
        "logit_bias",
        "suffix",
        "echo",
        "best_of",
        "logprobs",
    }
    assert "user" not in P.names_for(P.CHAT) | P.names_for(P.COMPLETION)
    assert all(str(p.label) and str(p.help) for p in P.PARAMS)


def test_nothing_typed_means_nothing_set():
    assert ok({}) == {}
    assert ok({"temperature": " ", "stop": ["", ""], "logit_bias": "\n", "tools": "", "tool_choice": ""}) == {}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"temperature": "0"}, {"temperature": 0.0}),
        ({"temperature": " 1.5 "}, {"temperature": 1.5}),
        ({"top_p": "1"}, {"top_p": 1.0}),
        ({"max_tokens": "1"}, {"max_tokens": 1}),
        ({"presence_penalty": "-2"}, {"presence_penalty": -2.0}),
        ({"frequency_penalty": "2"}, {"frequency_penalty": 2.0}),
        ({"seed": "-7"}, {"seed": -7}),
        ({"n": "8"}, {"n": 8}),
        ({"logprobs": "on", "top_logprobs": "20"}, {"logprobs": True, "top_logprobs": 20}),
        ({"logprobs": "on", "top_logprobs": "0"}, {"logprobs": True, "top_logprobs": 0}),
    ],
)
def test_numbers_and_flags_at_their_limits(data, expected):
    assert ok(data) == expected


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"temperature": "2.01"}, "temperature", "from 0 to 2"),
        ({"temperature": "nan"}, "temperature", "from 0 to 2"),
        ({"temperature": "warm"}, "temperature", "Enter a number"),
        ({"top_p": "-0.1"}, "top_p", "from 0 to 1"),
        ({"max_tokens": "0"}, "max_tokens", "at least 1"),
        ({"max_tokens": "99999999999"}, "max_tokens", "too large"),
        ({"max_tokens": "1e3"}, "max_tokens", "whole number"),
        ({"seed": str(2**63)}, "seed", "too large"),
        ({"n": "9"}, "n", "from 1 to 8"),
        ({"top_logprobs": "2"}, "top_logprobs", "Log probabilities"),
        ({"logprobs": "on", "top_logprobs": "21"}, "top_logprobs", "from 0 to 20"),
        ({"logprobs": "perhaps"}, "logprobs", "Tick the box"),
    ],
)
def test_numbers_out_of_range_are_refused_with_a_message(data, field, message):
    assert message in error(data, field)


def test_stop_sequences_understand_escapes_and_keep_spaces():
    assert ok({"stop": [r"\n\n", " END", "", r"a\\nb"]}) == {"stop": ["\n\n", " END", "a\\nb"]}
    assert "At most 4" in error({"stop": ["a", "b", "c", "d", "e"]}, "stop")
    assert P.encode_escapes("x\n\\y\t") == r"x\n\\y\t"
    assert P.decode_escapes(P.encode_escapes("x\n\\n\t\r")) == "x\n\\n\t\r"


def test_logit_bias_as_json_or_as_rows():
    assert ok({"logit_bias": '{"50256": -100, "11": 5}'}) == {"logit_bias": {"50256": -100, "11": 5}}
    rows = '50256: -100\n\n 11 = 5\n"42", 0\n7 100'
    assert ok({"logit_bias": rows}) == {"logit_bias": {"50256": -100, "11": 5, "42": 0, "7": 100}}
    assert "line 1" in error({"logit_bias": '{"50256": -100'}, "logit_bias")
    assert "-100 to 100" in error({"logit_bias": "50256: -101"}, "logit_bias")
    assert "-100 to 100" in error({"logit_bias": '{"50256": 1.5}'}, "logit_bias")
    assert "not a token id" in error({"logit_bias": "hello: 5"}, "logit_bias")
    assert "Line 2" in error({"logit_bias": "1: 2\nnonsense"}, "logit_bias")
    assert "JSON object" in error({"logit_bias": "[1, 2]"}, "logit_bias")


def test_logit_bias_must_be_an_object_of_token_ids():
    assert "not a token id" in error({"logit_bias": '{"a": 1}'}, "logit_bias")
    assert "At most 300" in error({"logit_bias": json.dumps({str(i): 1 for i in range(301)})}, "logit_bias")


def test_response_formats():
    assert ok({"response_format": "text"}) == {"response_format": {"type": "text"}}
    assert ok({"response_format": "json_object"}) == {"response_format": {"type": "json_object"}}
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    data = {"response_format": "json_schema", "json_schema_name": "place", "json_schema": json.dumps(schema)}
    assert ok(data) == {"response_format": {"type": "json_schema", "json_schema": {"name": "place", "schema": schema}}}
    strict = ok({**data, "json_schema_strict": "on"})["response_format"]["json_schema"]
    assert strict["strict"] is True
    # The schema inputs are ignored unless a schema is what was chosen.
    assert ok({"response_format": "json_object", "json_schema": "garbage"}) == {
        "response_format": {"type": "json_object"}
    }


def test_a_json_schema_needs_a_name_and_an_object():
    result = P.validate({"response_format": "json_schema"})
    assert set(result.errors) == {P.SCHEMA_NAME, P.SCHEMA}
    assert "name" in error(
        {"response_format": "json_schema", "json_schema": "{}", "json_schema_name": "a b"}, P.SCHEMA_NAME
    )
    assert "JSON object" in error(
        {"response_format": "json_schema", "json_schema": "[1]", "json_schema_name": "a"}, P.SCHEMA
    )
    assert "not valid JSON" in error(
        {"response_format": "json_schema", "json_schema": "{", "json_schema_name": "a"}, P.SCHEMA
    )
    assert "type" in error(
        {"response_format": "json_schema", "json_schema": '{"type": 3}', "json_schema_name": "a"}, P.SCHEMA
    )
    assert "Choose" in error({"response_format": "xml"}, "response_format")


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def test_tools_and_tool_choice():
    tools = json.dumps([WEATHER])
    assert ok({"tools": tools}) == {"tools": [WEATHER]}
    for choice in ("none", "auto", "required"):
        assert ok({"tools": tools, "tool_choice": choice}) == {"tools": [WEATHER], "tool_choice": choice}
    assert ok({"tools": tools, "tool_choice": "function:get_weather"})["tool_choice"] == {
        "type": "function",
        "function": {"name": "get_weather"},
    }
    # A bare function definition, or a single tool without the list, is understood too.
    assert ok({"tools": json.dumps(WEATHER["function"])}) == {"tools": [WEATHER]}
    assert P.tool_names(tools) == ["get_weather"] and P.tool_names("{oops") == []


@pytest.mark.parametrize(
    ("tools", "message"),
    [
        ("[{", "not valid JSON"),
        ('"get_weather"', "JSON list"),
        ("[1]", "must be a JSON object"),
        ('[{"type": "retrieval"}]', '"type" must be "function"'),
        ('[{"type": "function"}]', "object with a name"),
        ('[{"type": "function", "function": {"name": "has space"}}]', "letters, digits"),
        ('[{"type": "function", "function": {"name": "f", "params": {}}}]', "unknown key “params”"),
        ('[{"type": "function", "function": {"name": "f", "parameters": []}}]', "must be a JSON object"),
        ('[{"type": "function", "function": {"name": "f", "description": 5}}]', "description"),
        ('[{"name": "f"}, {"name": "f"}]', "Two tools are named “f”"),
    ],
)
def test_bad_tools_are_explained(tools, message):
    assert message in error({"tools": tools}, "tools")


def test_tool_choice_needs_its_tools():
    assert "Define at least one tool" in error({"tool_choice": "auto"}, "tool_choice")
    assert "no tool named “lookup”" in error(
        {"tools": json.dumps([WEATHER]), "tool_choice": "function:lookup"}, "tool_choice"
    )
    assert "Choose" in error({"tools": json.dumps([WEATHER]), "tool_choice": "sometimes"}, "tool_choice")


def test_completion_mode_parameters():
    assert ok({"suffix": " end.", "echo": "on", "best_of": "3", "n": "2", "logprobs": "5"}, P.COMPLETION) == {
        "suffix": " end.",
        "echo": True,
        "best_of": 3,
        "n": 2,
        "logprobs": 5,
    }
    assert "from 0 to 5" in error({"logprobs": "6"}, "logprobs", P.COMPLETION)
    assert "at least n" in error({"best_of": "2", "n": "3"}, "best_of", P.COMPLETION)
    assert "from 1 to 20" in error({"best_of": "21"}, "best_of", P.COMPLETION)
    # Chat-only parameters are not read in completion mode, and the other way round.
    assert ok({"tools": "[", "response_format": "xml"}, P.COMPLETION) == {}
    assert ok({"suffix": "x", "echo": "on"}) == {}


SAMPLE = {
    "temperature": 0.7,
    "top_p": 0.9,
    "max_tokens": 256,
    "stop": ["\n\n", "END\\"],
    "presence_penalty": -0.5,
    "frequency_penalty": 1.0,
    "seed": 42,
    "n": 2,
    "logit_bias": {"50256": -100},
    "response_format": {
        "type": "json_schema",
        "json_schema": {"name": "a", "schema": {"type": "object"}, "strict": True},
    },
    "tools": [WEATHER],
    "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    "logprobs": True,
    "top_logprobs": 3,
}


def test_stored_values_go_to_the_form_and_back_unchanged():
    assert P.validate(P.form_values(SAMPLE)).params == SAMPLE
    assert P.request_fields(SAMPLE) == SAMPLE
    completion = {"suffix": "\n", "echo": True, "best_of": 2, "logprobs": 0, "stop": "END"}
    assert P.request_fields(completion, P.COMPLETION) == {**completion, "stop": ["END"]}


@pytest.mark.parametrize(
    ("stored", "field"),
    [
        ({"temperature": 3}, "temperature"),
        ({"temperature": True}, "temperature"),
        ({"n": 2.5}, "n"),
        ({"stop": [5]}, "stop"),
        ({"stop": 5}, "stop"),
        ({"logprobs": "yes"}, "logprobs"),
        ({"logit_bias": [1]}, "logit_bias"),
        ({"tools": {"name": "f"}}, "tools"),
        ({"tool_choice": "auto"}, "tool_choice"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"user": "someone"}, "user"),
        ({"suffix": "x"}, "suffix"),
        ({"best_of": 2}, "best_of"),
    ],
)
def test_stored_values_that_break_the_rules_are_never_sent(stored, field):
    result = P.check_stored(stored)
    assert field in result.errors and result.params == {}
    with pytest.raises(P.InvalidParams) as caught:
        P.request_fields(stored)
    assert field in caught.value.message and "Settings" in caught.value.message
