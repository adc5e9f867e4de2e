"""Every request parameter a user can set, in one table, and the rules that check them.

Conversation.params (and Preset.params, ProviderModel.default_params) hold API-shaped values keyed
by their exact OpenAI names; a parameter that is not set is absent. Users type strings into a
form; `validate()` turns those strings into API values, or into one clear message per field.
`form_values()` goes the other way, so stored values can be shown and checked again
(`check_stored()`), and `request_fields()` is what a request sends.

The table covers POST /v1/chat/completions (mode "chat") and POST /v1/completions (mode
"completion"); `user` is never a field: generation.payload() adds a stable, non-reversible id.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from django.utils.functional import Promise
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

CHAT = "chat"
COMPLETION = "completion"
BOTH = (CHAT, COMPLETION)

MAX_N = 8
MAX_STOP = 4
MAX_BEST_OF = 20
MAX_LOGIT_BIAS_ENTRIES = 300
MAX_TOOLS = 128
MAX_INT = 2**31 - 1
SEED_RANGE = (-(2**63), 2**63 - 1)
NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Form values of the extra inputs of response_format.
SCHEMA_NAME, SCHEMA, SCHEMA_STRICT = "json_schema_name", "json_schema", "json_schema_strict"
FUNCTION_PREFIX = "function:"


@dataclass(frozen=True)
class Param:
    """One request parameter: its API name, what kind of value it takes, and what it means."""

    name: str
    kind: str  # float, int, bool, text, stop, logit_bias, response_format, tools, tool_choice
    label: Promise
    help: Promise
    modes: tuple[str, ...] = BOTH
    minimum: float | None = None
    maximum: float | None = None
    placeholder: str = ""
    choices: tuple[tuple[str, Promise], ...] = field(default=())

    @property
    def field_id(self) -> str:
        return f"param-{self.name}"


PARAMS: tuple[Param, ...] = (
    Param(
        "temperature",
        "float",
        gettext_lazy("Temperature"),
        gettext_lazy("Sampling temperature, 0 to 2. Higher (0.8) is more random, lower (0.2) more focused."),
        minimum=0,
        maximum=2,
        placeholder="1",
    ),
    Param(
        "top_p",
        "float",
        gettext_lazy("Top P"),
        gettext_lazy("Nucleus sampling, 0 to 1: only the tokens in the top P of probability mass are considered."),
        minimum=0,
        maximum=1,
        placeholder="1",
    ),
    Param(
        "max_tokens",
        "int",
        gettext_lazy("Max tokens"),
        gettext_lazy("The most tokens the reply may have. Empty: as many as the model allows."),
        minimum=1,
        maximum=MAX_INT,
    ),
    Param(
        "stop",
        "stop",
        gettext_lazy("Stop sequences"),
        gettext_lazy(r"Up to 4 sequences where the model stops writing. Write \n for a new line, \\ for a backslash."),
    ),
    Param(
        "presence_penalty",
        "float",
        gettext_lazy("Presence penalty"),
        gettext_lazy("-2 to 2. Positive values push the model towards new topics."),
        minimum=-2,
        maximum=2,
        placeholder="0",
    ),
    Param(
        "frequency_penalty",
        "float",
        gettext_lazy("Frequency penalty"),
        gettext_lazy("-2 to 2. Positive values make the model repeat the same lines less."),
        minimum=-2,
        maximum=2,
        placeholder="0",
    ),
    Param(
        "seed",
        "int",
        gettext_lazy("Seed"),
        gettext_lazy("A whole number: repeated requests with the same seed and settings try to give the same reply."),
        minimum=SEED_RANGE[0],
        maximum=SEED_RANGE[1],
    ),
    Param(
        "n",
        "int",
        gettext_lazy("Choices (n)"),
        gettext_lazy("How many replies to generate at once, 1 to 8."),
        minimum=1,
        maximum=MAX_N,
        placeholder="1",
    ),
    Param(
        "logit_bias",
        "logit_bias",
        gettext_lazy("Logit bias"),
        gettext_lazy(
            'Token id → bias from -100 to 100, as JSON ({"50256": -100}) or one per line ("50256: -100"). '
            "-100 bans a token, 100 forces it."
        ),
    ),
    Param(
        "response_format",
        "response_format",
        gettext_lazy("Response format"),
        gettext_lazy("JSON mode makes the model write valid JSON; say so in the prompt too."),
        modes=(CHAT,),
        choices=(
            ("text", gettext_lazy("Text")),
            ("json_object", gettext_lazy("JSON object")),
            ("json_schema", gettext_lazy("JSON following a schema")),
        ),
    ),
    Param(
        "tools",
        "tools",
        gettext_lazy("Tools"),
        gettext_lazy(
            'Functions the model may call, as a JSON list of {"type": "function", "function": '
            '{"name": …, "description": …, "parameters": {JSON schema}}}.'
        ),
        modes=(CHAT,),
    ),
    Param(
        "tool_choice",
        "tool_choice",
        gettext_lazy("Tool choice"),
        gettext_lazy("none: never call a tool; auto: the model decides; required: call one; or name one function."),
        modes=(CHAT,),
        choices=(
            ("none", gettext_lazy("none")),
            ("auto", gettext_lazy("auto")),
            ("required", gettext_lazy("required")),
        ),
    ),
    Param(
        "logprobs",
        "bool",
        gettext_lazy("Log probabilities"),
        gettext_lazy("Return the log probability of each token of the reply."),
        modes=(CHAT,),
    ),
    Param(
        "top_logprobs",
        "int",
        gettext_lazy("Top log probabilities"),
        gettext_lazy("0 to 20: how many likely alternatives to return per token (needs log probabilities)."),
        modes=(CHAT,),
        minimum=0,
        maximum=20,
    ),
    # POST /v1/completions only.
    Param(
        "suffix",
        "text",
        gettext_lazy("Suffix"),
        gettext_lazy("Text that comes after the completion (for inserting text in the middle)."),
        modes=(COMPLETION,),
    ),
    Param(
        "echo",
        "bool",
        gettext_lazy("Echo"),
        gettext_lazy("Return the prompt in front of the completion."),
        modes=(COMPLETION,),
    ),
    Param(
        "best_of",
        "int",
        gettext_lazy("Best of"),
        gettext_lazy(
            "Generate this many completions on the server and return the best (at least n, at most 20). Cannot stream."
        ),
        modes=(COMPLETION,),
        minimum=1,
        maximum=MAX_BEST_OF,
    ),
    Param(
        "logprobs",
        "int",
        gettext_lazy("Log probabilities"),
        gettext_lazy("0 to 5: return the log probabilities of this many most likely tokens at each position."),
        modes=(COMPLETION,),
        minimum=0,
        maximum=5,
    ),
)


def params_for(mode: str = CHAT) -> list[Param]:
    """The parameters of one endpoint, in the order a form shows them."""
    return [p for p in PARAMS if mode in p.modes]


def names_for(mode: str = CHAT) -> set[str]:
    return {p.name for p in params_for(mode)}


class Invalid(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidParams(Exception):
    """Stored parameters that no longer pass the rules; `message` names the fields."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        self.message = _("These settings are not valid: %(errors)s. Fix them in Settings.") % {
            "errors": "; ".join(f"{name}: {error}" for name, error in errors.items())
        }
        super().__init__(self.message)


@dataclass
class Result:
    params: dict  # API-shaped values, only those set
    errors: dict[str, str]  # form field name -> message

    @property
    def ok(self) -> bool:
        return not self.errors


# -- reading form input -----------------------------------------------------------------------


def _values(data, name: str) -> list[str]:
    if hasattr(data, "getlist"):
        return [str(v) for v in data.getlist(name)]
    value = data.get(name)
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [str(value)]


def _value(data, name: str) -> str:
    values = _values(data, name)
    return values[-1] if values else ""


def _number_range(param: Param) -> str:
    return _("Enter a number from %(min)s to %(max)s.") % {"min": _fmt(param.minimum), "max": _fmt(param.maximum)}


def _fmt(number) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


def _bounds(param: Param) -> tuple[float, float]:
    """The range of a number parameter (every float and int parameter has one)."""
    assert param.minimum is not None and param.maximum is not None, f"{param.name} has no range"
    return param.minimum, param.maximum


def _parse_float(param: Param, raw: str) -> float:
    minimum, maximum = _bounds(param)
    try:
        value = float(raw.strip())
    except ValueError:
        raise Invalid(_("Enter a number, such as %(example)s.") % {"example": param.placeholder or "0.5"}) from None
    if not math.isfinite(value) or not minimum <= value <= maximum:
        raise Invalid(_number_range(param))
    return value


INT_EXAMPLES = {"max_tokens": "256", "seed": "42", "n": "2", "best_of": "3"}


def _parse_int(param: Param, raw: str) -> int:
    text = raw.strip()
    if not re.fullmatch(r"[+-]?\d+", text):
        example = INT_EXAMPLES.get(param.name, _fmt(param.minimum))
        raise Invalid(_("Enter a whole number, such as %(example)s.") % {"example": example})
    value = int(text)
    minimum, maximum = _bounds(param)
    if maximum >= MAX_INT:  # no real upper limit, only a sane one
        if value < minimum:
            raise Invalid(_("Enter a whole number of at least %(min)s.") % {"min": _fmt(param.minimum)})
        if value > maximum:
            raise Invalid(_("That number is too large."))
    elif not minimum <= value <= maximum:
        bounds = {"min": _fmt(param.minimum), "max": _fmt(param.maximum)}
        raise Invalid(_("Enter a whole number from %(min)s to %(max)s.") % bounds)
    return value


def _parse_bool(raw: str) -> bool | None:
    text = raw.strip().lower()
    if text in ("", "false", "off", "0"):
        return None  # unticked: not sent (false is every provider's default)
    if text in ("on", "true", "1"):
        return True
    raise Invalid(_("Tick the box or leave it empty."))


_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def decode_escapes(text: str) -> str:
    r"""Turn the \n, \t, \r and \\ a user typed into the characters they stand for."""
    return _ESCAPE.sub(lambda m: _ESCAPES.get(m.group(1), m.group(0)), text)


def encode_escapes(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")


def _parse_stop(raws: list[str]) -> list[str] | None:
    stops = [decode_escapes(raw) for raw in raws if raw != ""]
    if len(stops) > MAX_STOP:
        raise Invalid(_("At most %(max)s stop sequences.") % {"max": MAX_STOP})
    return stops or None


_BIAS_ROW = re.compile(r'^\s*"?(?P<token>[^\s:=,"]+)"?\s*(?:[:=,]\s*|\s+)(?P<bias>\S+?)\s*,?\s*$')


def _parse_logit_bias(raw: str) -> dict[str, int] | None:
    text = raw.strip()
    if not text:
        return None
    if text.startswith("["):
        raise Invalid(_('Enter a JSON object such as {"50256": -100}, or one token id and bias per line.'))
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except ValueError as exc:
            raise Invalid(_("This is not valid JSON (%(error)s).") % {"error": _json_error(exc)}) from None
        if not isinstance(obj, dict):
            raise Invalid(_('Enter a JSON object such as {"50256": -100}.'))
        pairs = [(str(k), v) for k, v in obj.items()]
    else:
        pairs = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            match = _BIAS_ROW.match(line)
            if match is None:
                raise Invalid(
                    _('Line %(line)s: write a token id and a bias, such as "50256: -100".') % {"line": number}
                )
            pairs.append((match["token"], match["bias"]))
    if len(pairs) > MAX_LOGIT_BIAS_ENTRIES:
        raise Invalid(_("At most %(max)s tokens can be biased.") % {"max": MAX_LOGIT_BIAS_ENTRIES})
    result: dict[str, int] = {}
    for token, bias in pairs:
        if not re.fullmatch(r"\d+", token) or len(token) > 10:
            raise Invalid(_("“%(token)s” is not a token id: use the number of the token.") % {"token": token[:40]})
        value = bias
        if isinstance(bias, str):
            value = int(bias) if re.fullmatch(r"[+-]?\d+", bias) else None
        if isinstance(value, bool) or not isinstance(value, int) or not -100 <= value <= 100:
            raise Invalid(_("The bias of token %(token)s must be a whole number from -100 to 100.") % {"token": token})
        result[str(int(token))] = value
    return result or None


def _json_error(exc: ValueError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return _("%(msg)s at line %(line)s, column %(col)s") % {"msg": exc.msg, "line": exc.lineno, "col": exc.colno}
    return str(exc)


def _parse_json(raw: str):
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise Invalid(_("This is not valid JSON (%(error)s).") % {"error": _json_error(exc)}) from None


def _check_schema(schema, what: str) -> None:
    """A light check that a JSON schema is shaped like one (full meta-validation is the provider's)."""
    if not isinstance(schema, dict):
        raise Invalid(_('%(what)s must be a JSON object, such as {"type": "object"}.') % {"what": what})
    kind = schema.get("type")
    if kind is not None and not (
        isinstance(kind, str) or (isinstance(kind, list) and all(isinstance(k, str) for k in kind))
    ):
        raise Invalid(_('%(what)s: “type” must be a string such as "object".') % {"what": what})
    if "properties" in schema and not isinstance(schema["properties"], dict):
        raise Invalid(_("%(what)s: “properties” must be an object.") % {"what": what})
    if "required" in schema and not (
        isinstance(schema["required"], list) and all(isinstance(r, str) for r in schema["required"])
    ):
        raise Invalid(_("%(what)s: “required” must be a list of property names.") % {"what": what})


def _parse_response_format(data, errors: dict[str, str]) -> dict | None:
    kind = _value(data, "response_format").strip()
    if not kind:
        return None
    if kind in ("text", "json_object"):
        return {"type": kind}
    if kind != "json_schema":
        errors["response_format"] = _("Choose text, JSON object or JSON schema.")
        return None
    name = _value(data, SCHEMA_NAME).strip()
    raw_schema = _value(data, SCHEMA).strip()
    schema = None
    if not NAME_RE.match(name):
        errors[SCHEMA_NAME] = _("Give the schema a name: up to 64 letters, digits, _ or -.")
    if not raw_schema:
        errors[SCHEMA] = _("Enter the JSON schema the reply must follow.")
    else:
        try:
            schema = _parse_json(raw_schema)
            _check_schema(schema, _("The schema"))
        except Invalid as exc:
            errors[SCHEMA] = exc.message
    if SCHEMA_NAME in errors or SCHEMA in errors:
        return None
    json_schema = {"name": name, "schema": schema}
    try:
        if _parse_bool(_value(data, SCHEMA_STRICT)):
            json_schema["strict"] = True
    except Invalid as exc:
        errors[SCHEMA_STRICT] = exc.message
        return None
    return {"type": "json_schema", "json_schema": json_schema}


_FUNCTION_KEYS = {"name", "description", "parameters", "strict"}


def _parse_tools(raw: str) -> list[dict] | None:
    text = raw.strip()
    if not text:
        return None
    tools = _parse_json(text)
    if isinstance(tools, dict):
        tools = [tools]  # one tool typed without the surrounding list
    if not isinstance(tools, list):
        raise Invalid(_("Enter a JSON list of tools."))
    if len(tools) > MAX_TOOLS:
        raise Invalid(_("At most %(max)s tools.") % {"max": MAX_TOOLS})
    result, seen = [], set()
    for number, tool in enumerate(tools, 1):
        where = _("Tool %(number)s") % {"number": number}
        if not isinstance(tool, dict):
            raise Invalid(_("%(where)s must be a JSON object.") % {"where": where})
        if "type" not in tool and "name" in tool:
            tool = {"type": "function", "function": tool}  # a bare function definition
        if tool.get("type") != "function":
            raise Invalid(_('%(where)s: "type" must be "function".') % {"where": where})
        extra = set(tool) - {"type", "function"}
        if extra:
            raise Invalid(_("%(where)s: unknown key “%(key)s”.") % {"where": where, "key": sorted(extra)[0]})
        function = tool.get("function")
        if not isinstance(function, dict):
            raise Invalid(_('%(where)s: "function" must be an object with a name.') % {"where": where})
        extra = set(function) - _FUNCTION_KEYS
        if extra:
            raise Invalid(_("%(where)s: unknown key “%(key)s”.") % {"where": where, "key": sorted(extra)[0]})
        name = function.get("name")
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise Invalid(_("%(where)s: the name must be 1 to 64 letters, digits, _ or -.") % {"where": where})
        if name in seen:
            raise Invalid(_("Two tools are named “%(name)s”.") % {"name": name})
        seen.add(name)
        if "description" in function and not isinstance(function["description"], str):
            raise Invalid(_("%(where)s: the description must be a string.") % {"where": where})
        if "parameters" in function:
            _check_schema(function["parameters"], _("%(where)s: the parameters") % {"where": where})
        if "strict" in function and not isinstance(function["strict"], bool):
            raise Invalid(_('%(where)s: "strict" must be true or false.') % {"where": where})
        result.append({"type": "function", "function": function})
    return result or None


def tool_names(raw_tools: str) -> list[str]:
    """The function names in what the user typed into Tools, as far as it can be read."""
    try:
        tools = json.loads(raw_tools or "[]")
    except ValueError:
        return []
    if isinstance(tools, dict):
        tools = [tools]
    names = []
    for tool in tools if isinstance(tools, list) else []:
        if isinstance(tool, dict):
            function = tool.get("function") if "function" in tool else tool
            if isinstance(function, dict) and isinstance(function.get("name"), str):
                names.append(function["name"])
    return names


def _parse_tool_choice(raw: str, tools: list[dict] | None) -> str | dict | None:
    text = raw.strip()
    if not text:
        return None
    if text.startswith(FUNCTION_PREFIX):
        name = text[len(FUNCTION_PREFIX) :]
        names = [t["function"]["name"] for t in tools or []]
        if name not in names:
            raise Invalid(_("There is no tool named “%(name)s” under Tools.") % {"name": name[:64]})
        return {"type": "function", "function": {"name": name}}
    if text not in ("none", "auto", "required"):
        raise Invalid(_("Choose none, auto, required or one of the tools."))
    if not tools:
        raise Invalid(_("Define at least one tool under Tools first."))
    return text


# -- the whole form ---------------------------------------------------------------------------


def validate(data: Mapping, mode: str = CHAT) -> Result:
    """Check what a user typed (form field -> string or list of strings) and shape it for the API."""
    params: dict = {}
    errors: dict[str, str] = {}
    by_name = {p.name: p for p in params_for(mode)}
    value: object
    for param in by_name.values():
        try:
            if param.kind == "float":
                raw = _value(data, param.name)
                value = _parse_float(param, raw) if raw.strip() else None
            elif param.kind == "int":
                raw = _value(data, param.name)
                value = _parse_int(param, raw) if raw.strip() else None
            elif param.kind == "bool":
                value = _parse_bool(_value(data, param.name))
            elif param.kind == "text":
                value = _value(data, param.name) or None
            elif param.kind == "stop":
                value = _parse_stop(_values(data, param.name))
            elif param.kind == "logit_bias":
                value = _parse_logit_bias(_value(data, param.name))
            elif param.kind == "response_format":
                value = _parse_response_format(data, errors)
            elif param.kind == "tools":
                value = _parse_tools(_value(data, param.name))
            else:
                continue  # tool_choice: after tools, below
        except Invalid as exc:
            errors[param.name] = exc.message
            continue
        if value is not None:
            params[param.name] = value
    if "tool_choice" in by_name and "tools" not in errors:
        try:
            value = _parse_tool_choice(_value(data, "tool_choice"), params.get("tools"))
        except Invalid as exc:
            errors["tool_choice"] = exc.message
        else:
            if value is not None:
                params["tool_choice"] = value
    _check_together(mode, params, errors)
    return Result(params=params if not errors else {}, errors=errors)


def _check_together(mode: str, params: dict, errors: dict[str, str]) -> None:
    if mode == CHAT and "top_logprobs" in params and not params.get("logprobs"):
        errors["top_logprobs"] = _("Tick “Log probabilities” too: top log probabilities need it.")
    if mode == COMPLETION and "best_of" in params and params["best_of"] < params.get("n", 1):
        errors["best_of"] = _("Best of must be at least n (%(n)s).") % {"n": params.get("n", 1)}


# -- stored values ----------------------------------------------------------------------------


def form_values(params: Mapping, mode: str = CHAT) -> dict[str, str | list[str]]:
    """Stored API values as the strings a form shows (and `validate()` reads back)."""
    values: dict[str, str | list[str]] = {}
    for param in params_for(mode):
        if param.name not in params:
            continue
        value = params[param.name]
        if param.kind == "bool":
            values[param.name] = "on" if value is True else ("" if value in (False, None) else str(value))
        elif param.kind == "stop":
            stops = [value] if isinstance(value, str) else value if isinstance(value, list) else [value]
            values[param.name] = [encode_escapes(s) if isinstance(s, str) else json.dumps(s) for s in stops]
        elif param.kind == "logit_bias":
            values[param.name] = json.dumps(value) if isinstance(value, dict) else str(value)
        elif param.kind == "response_format":
            if isinstance(value, dict):
                values[param.name] = str(value.get("type", ""))
                schema = value.get("json_schema")
                if isinstance(schema, dict):
                    values[SCHEMA_NAME] = str(schema.get("name", ""))
                    values[SCHEMA] = json.dumps(schema.get("schema"), indent=2) if "schema" in schema else ""
                    values[SCHEMA_STRICT] = "on" if schema.get("strict") is True else ""
            else:
                values[param.name] = str(value)
        elif param.kind == "tools":
            values[param.name] = json.dumps(value, indent=2) if isinstance(value, (list, dict)) else str(value)
        elif param.kind == "tool_choice":
            if isinstance(value, dict):
                function = value.get("function")
                name = function.get("name") if isinstance(function, dict) else None
                values[param.name] = f"{FUNCTION_PREFIX}{name}" if isinstance(name, str) else json.dumps(value)
            else:
                values[param.name] = str(value)
        elif isinstance(value, bool):
            values[param.name] = str(value)  # never a number: validate() refuses "True"
        else:
            values[param.name] = "" if value is None else str(value)
    return values


_STORED_TYPES = {
    "bool": (bool,),
    "stop": (str, list),
    "logit_bias": (dict,),
    "response_format": (dict,),
    "tools": (list,),
    "tool_choice": (str, dict),
    "text": (str,),
}


def _stored_shape_ok(kind: str, value) -> bool:
    """Catch what form_values() would otherwise turn into an acceptable string (5 as a stop sequence)."""
    if kind in ("float", "int"):
        return not isinstance(value, bool)
    if kind == "stop" and isinstance(value, list):
        return all(isinstance(s, str) for s in value)
    return isinstance(value, _STORED_TYPES.get(kind, (object,)))


def check_stored(params: Mapping, mode: str = CHAT) -> Result:
    """Check stored API-shaped values (a preset, an admin default, a conversation about to be sent)."""
    by_name = {p.name: p for p in params_for(mode)}
    errors = {}
    for name, value in params.items():
        if name not in by_name:
            errors[name] = _("%(name)s is not a parameter of this endpoint.") % {"name": name}
        elif not _stored_shape_ok(by_name[name].kind, value):
            errors[name] = _("This value has the wrong type.")
    result = validate(form_values(params, mode), mode)
    result.errors = {**errors, **result.errors}
    if result.errors:
        result.params = {}
    return result


def request_fields(params: Mapping, mode: str = CHAT) -> dict:
    """The request fields for stored parameters: only those set, checked again before sending.

    Raises InvalidParams, whose message says what is wrong, rather than send something the user
    did not mean.
    """
    result = check_stored(params, mode)
    if result.errors:
        raise InvalidParams(result.errors)
    return result.params
