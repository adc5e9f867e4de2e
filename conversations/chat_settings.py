"""The settings panel of a conversation, presets, and the admin's per-model defaults.

The panel is one form saved on every change (htmx). It is saved whole or not at all: a field
that does not validate gets its message next to it, nothing is saved, and what the user typed
stays in the page. The response carries the whole form (with what was typed), but only its
status line, the error slots and the tool-choice list are swapped in (hx-swap-oob), so an input
the user is typing into is never replaced.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from django import forms
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db import IntegrityError, transaction
from django.http import Http404
from django.shortcuts import render
from django.urls import path
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseClientRefresh

from . import params as P
from .models import Conversation, Preset, Provider, ProviderModel

log = logging.getLogger(__name__)

TEMPLATE = "conversations/settings_panel.html"
SYSTEM_PROMPT = "system_prompt"


# -- what the panel shows -----------------------------------------------------------------------


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


def _one(values, name) -> str:
    value = values.get(name, "")
    if isinstance(value, (list, tuple)):
        return value[-1] if value else ""
    return value


def _many(values, name) -> list[str]:
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
            f.values = ([v for v in _many(values, param.name) if v] + [""] * P.MAX_STOP)[: P.MAX_STOP]
        else:
            f.value = _one(values, param.name)
        if param.kind == "response_format":
            f.extras = {name: _one(values, name) for name in (P.SCHEMA_NAME, P.SCHEMA, P.SCHEMA_STRICT)}
        if param.kind == "tool_choice":
            f.options = [(value, str(label)) for value, label in param.choices]
            function = _("function: %(name)s")
            f.options += [
                (P.FUNCTION_PREFIX + name, function % {"name": name}) for name in P.tool_names(_one(values, "tools"))
            ]
            if f.value and f.value not in [value for value, _label in f.options]:
                f.options.append((f.value, function % {"name": f.value.removeprefix(P.FUNCTION_PREFIX)}))
        fields.append(f)
    return fields


def panel_context(conversation: Conversation, user, *, values=None, errors=None, **extra) -> dict:
    """Everything settings_panel.html needs; `values` are posted strings (else the saved settings)."""
    mode = conversation.mode or P.CHAT
    if values is None:
        values = {**P.form_values(conversation.params, mode), SYSTEM_PROMPT: conversation.system_prompt}
    errors = errors or {}
    return {
        "conversation": conversation,
        "fields": build_fields(mode, values, errors),
        "system_prompt": _one(values, SYSTEM_PROMPT),
        "system_prompt_error": errors.get(SYSTEM_PROMPT, ""),
        "presets": user.presets.all(),
        **extra,
    }


# -- admin defaults and presets -------------------------------------------------------------------


def model_defaults(provider: Provider | None, model: str) -> dict:
    """The admin's settings for new conversations with this model: {"params": ..., "system_prompt": ...}."""
    entry = ProviderModel.objects.filter(provider=provider, name=model).first() if provider and model else None
    if entry is None:
        return {"params": {}, "system_prompt": ""}
    checked = P.check_stored(entry.default_params or {})
    if checked.errors:
        log.warning("Ignoring invalid default settings of model %s: %s", model, checked.errors)
    return {"params": checked.params, "system_prompt": entry.default_system_prompt}


def apply_model_change(conversation: Conversation, old_model: str) -> bool:
    """After the model of a conversation changed: give it the new model's admin defaults.

    Only while nothing has been said and the settings are still the old model's defaults (that
    is, the user has not changed them); returns whether anything changed.
    """
    if conversation.messages.exists():
        return False
    old = model_defaults(conversation.provider, old_model)
    if (conversation.params, conversation.system_prompt) != (old["params"], old["system_prompt"]):
        return False
    new = model_defaults(conversation.provider, conversation.model)
    if new == old:
        return False
    conversation.params, conversation.system_prompt = new["params"], new["system_prompt"]
    conversation.save(update_fields=["params", "system_prompt"])
    return True


def apply_preset(conversation: Conversation, preset: Preset) -> str:
    """Give the conversation the preset's model and settings; return an error message, or ""."""
    mode = conversation.mode or P.CHAT
    checked = P.check_stored(preset.params, mode)
    if checked.errors:
        return _("This preset's settings are no longer valid (%(errors)s); it was not used.") % {
            "errors": "; ".join(f"{k}: {v}" for k, v in checked.errors.items())
        }
    fields = ["params", "system_prompt"]
    if preset.provider is not None and preset.provider.enabled:
        conversation.provider = preset.provider
        fields.append("provider")
        if preset.model:
            conversation.model = preset.model
            fields.append("model")
    conversation.params, conversation.system_prompt = checked.params, preset.system_prompt
    conversation.save(update_fields=fields)
    return ""


def _get_preset(request, preset_id: int) -> Preset:
    """A preset of the signed-in user, or 404: nobody else's presets exist for them."""
    try:
        return request.user.presets.select_related("provider").get(pk=preset_id)
    except Preset.DoesNotExist:
        raise Http404("No such preset") from None


def start_new_chat(request, conversation: Conversation) -> None:
    """New chat with a preset chosen next to the button: the new conversation gets its settings."""
    preset_id = request.POST.get("preset", "").strip()
    if not preset_id:
        return
    if not preset_id.isdigit():
        raise Http404("No such preset")
    error = apply_preset(conversation, _get_preset(request, int(preset_id)))
    if error:
        log.info("Preset %s not applied: %s", preset_id, error)


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


# -- views ------------------------------------------------------------------------------------


def _get_conversation(request, code) -> Conversation:
    from .views import _get_conversation

    return _get_conversation(request, code)


@require_POST
@login_required
def save_settings(request, code):
    """Save the whole settings form, or nothing (then each bad field says why)."""
    conversation = _get_conversation(request, code)
    mode = conversation.mode or P.CHAT
    result = P.validate(request.POST, mode)
    errors = dict(result.errors)
    system_prompt = request.POST.get(SYSTEM_PROMPT, "")
    if len(system_prompt) > settings.MAX_MESSAGE_CHARS:
        errors[SYSTEM_PROMPT] = _("The system prompt is %(length)s characters long; the limit is %(limit)s.") % {
            "length": f"{len(system_prompt):,}",
            "limit": f"{settings.MAX_MESSAGE_CHARS:,}",
        }
    if not errors:
        conversation.params = result.params
        conversation.system_prompt = system_prompt.strip()
        conversation.save(update_fields=["params", "system_prompt"])
    context = panel_context(conversation, request.user, values=request.POST, errors=errors, oob=True)
    context["status"] = "error" if errors else "saved"
    return render(request, f"{TEMPLATE}#settings_form", context)


def _presets_response(request, conversation, **extra):
    context = panel_context(conversation, request.user, **extra)
    return render(request, f"{TEMPLATE}#presets", context)


@require_POST
@login_required
def save_preset(request, code):
    """Save the conversation's saved settings, model and system prompt under a name (same name: replace)."""
    conversation = _get_conversation(request, code)
    name = " ".join(request.POST.get("name", "").split())
    if not name:
        return _presets_response(request, conversation, preset_error=_("Give the preset a name."), preset_name=name)
    if len(name) > 100:
        return _presets_response(request, conversation, preset_error=_("Use at most 100 characters."), preset_name=name)
    values = {
        "provider": conversation.provider,
        "model": conversation.model,
        "system_prompt": conversation.system_prompt,
        "params": conversation.params,
    }
    try:
        with transaction.atomic():
            _preset, created = request.user.presets.update_or_create(name=name, defaults=values)
    except IntegrityError:  # the same name saved twice at once
        created = False
    message = _("Saved “%(name)s”.") if created else _("Updated “%(name)s”.")
    return _presets_response(request, conversation, preset_saved=message % {"name": name})


@require_POST
@login_required
def use_preset(request, code, preset_id):
    conversation = _get_conversation(request, code)
    preset = _get_preset(request, preset_id)
    error = apply_preset(conversation, preset)
    if error:
        return _presets_response(request, conversation, preset_error=error)
    return HttpResponseClientRefresh()  # the model, the settings and the header all change


@require_POST
@login_required
def delete_preset(request, code, preset_id):
    conversation = _get_conversation(request, code)
    preset = _get_preset(request, preset_id)
    name = preset.name
    preset.delete()
    return _presets_response(request, conversation, preset_saved=_("Deleted “%(name)s”.") % {"name": name})


urlpatterns = [
    path("c/<uuid:code>/settings/", save_settings, name="save_settings"),
    path("c/<uuid:code>/presets/", save_preset, name="save_preset"),
    path("c/<uuid:code>/presets/<int:preset_id>/use/", use_preset, name="use_preset"),
    path("c/<uuid:code>/presets/<int:preset_id>/delete/", delete_preset, name="delete_preset"),
]
