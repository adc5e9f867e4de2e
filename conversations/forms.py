"""Forms shared by several pages: request-parameter fields (settings drawer, playground), the admin's model row."""

from __future__ import annotations

from dataclasses import dataclass, field

from django import forms
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from conversations.models import ProviderModel
from conversations.providers import params as P


@dataclass
class Field:
    """One parameter in the form: what to show in it and what is wrong with it."""

    param: P.Param
    value: str = ""
    values: list[str] = field(default_factory=list)  # the stop slots
    errors: dict[str, str] = field(default_factory=dict)
    options: list[tuple[str, str]] = field(default_factory=list)  # tool_choice
    extras: dict[str, str] = field(default_factory=dict)  # response_format's schema inputs

    @property
    def name(self) -> str:
        return self.param.name

    @property
    def id(self) -> str:
        return self.param.field_id

    @property
    def error(self) -> str:
        return self.errors.get(self.name, "")

    @property
    def schema_name(self) -> str:
        return self._extra(P.SCHEMA_NAME)

    @property
    def schema(self) -> str:
        return self._extra(P.SCHEMA)

    @property
    def schema_strict(self) -> bool:
        return self._extra(P.SCHEMA_STRICT) == "on"

    @property
    def schema_name_error(self) -> str:
        return self.errors.get(P.SCHEMA_NAME, "")

    @property
    def schema_error(self) -> str:
        return self.errors.get(P.SCHEMA, "")

    def _extra(self, name):
        return self.extras.get(name, "")

    @property
    def numeric_mode(self) -> str:
        """A keyboard hint that still allows a minus sign where the range needs one."""
        if self.param.kind == "int" and (self.param.minimum or 0) >= 0:
            return "numeric"
        if self.param.kind == "float" and (self.param.minimum or 0) >= 0:
            return "decimal"
        return ""


def one_value(values, name) -> str:
    value = values.get(name, "")
    if isinstance(value, (list, tuple)):
        return value[-1] if value else ""
    return value


def many_values(values, name) -> list[str]:
    if hasattr(values, "getlist"):
        return values.getlist(name)
    value = values.get(name, [])
    return list(value) if isinstance(value, (list, tuple)) else [value]


def build_fields(mode: str, values, errors: dict[str, str]) -> list[Field]:
    """The form's fields, filled from `values` (posted strings, or form_values() of stored params)."""
    fields = []
    for param in P.params_for(mode):
        f = Field(param=param, errors=errors)
        if param.kind == "stop":
            f.values = ([v for v in many_values(values, param.name) if v] + [""] * P.MAX_STOP)[: P.MAX_STOP]
        else:
            f.value = one_value(values, param.name)
        if param.kind == "response_format":
            f.extras = {name: one_value(values, name) for name in (P.SCHEMA_NAME, P.SCHEMA, P.SCHEMA_STRICT)}
        if param.kind == "tool_choice":
            f.options = [(value, str(label)) for value, label in param.choices]
            function = _("function: %(name)s")
            f.options += [
                (P.FUNCTION_PREFIX + name, function % {"name": name})
                for name in P.tool_names(one_value(values, "tools"))
            ]
            if f.value and f.value not in [value for value, _label in f.options]:
                f.options.append((f.value, function % {"name": f.value.removeprefix(P.FUNCTION_PREFIX)}))
        fields.append(f)
    return fields


class ProviderModelForm(forms.ModelForm):
    """Per-model rows in the admin: default settings are checked by the same rules as the panel's."""

    class Meta:
        model = ProviderModel
        fields = ["name", "context_length", "default_params", "default_system_prompt"]
        help_texts = {
            "default_params": gettext_lazy(
                'Request settings for new conversations with this model, as JSON, e.g. {"temperature": 0.7, '
                '"max_tokens": 512}. A user\'s preset replaces them.'
            ),
        }

    def clean_default_params(self):
        value = self.cleaned_data.get("default_params") or {}
        if not isinstance(value, dict):
            raise forms.ValidationError(_('Enter a JSON object such as {"temperature": 0.7, "max_tokens": 512}.'))
        checked = P.check_stored(value)
        if checked.errors:
            raise forms.ValidationError([f"{name}: {error}" for name, error in checked.errors.items()])
        return checked.params
