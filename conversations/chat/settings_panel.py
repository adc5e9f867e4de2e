"""The settings panel of a conversation, presets, and the admin's per-model defaults.

The panel is one form saved on every change (htmx). It is saved whole or not at all: a field
that does not validate gets its message next to it, nothing is saved, and what the user typed
stays in the page. The response carries the whole form (with what was typed), but only its
status line, the error slots and the tool-choice list are swapped in (hx-swap-oob), so an input
the user is typing into is never replaced.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db import IntegrityError, transaction
from django.http import Http404
from django.shortcuts import render
from django.urls import path
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseClientRefresh

from conversations.access import get_conversation
from conversations.forms import build_fields, one_value
from conversations.models import Conversation, Preset
from conversations.providers import params as P

log = logging.getLogger(__name__)

TEMPLATE = "conversations/settings_panel.html"
SYSTEM_PROMPT = "system_prompt"


# -- what the panel shows -----------------------------------------------------------------------


def panel_context(conversation: Conversation, user, *, values=None, errors=None, **extra) -> dict:
    """Everything settings_panel.html needs; `values` are posted strings (else the saved settings)."""
    mode = conversation.mode or P.CHAT
    if values is None:
        values = {**P.form_values(conversation.params, mode), SYSTEM_PROMPT: conversation.system_prompt}
    errors = errors or {}
    return {
        "conversation": conversation,
        "fields": build_fields(mode, values, errors),
        "system_prompt": one_value(values, SYSTEM_PROMPT),
        "system_prompt_error": errors.get(SYSTEM_PROMPT, ""),
        "presets": user.presets.all(),
        **extra,
    }


# -- admin defaults and presets -------------------------------------------------------------------


def _defaults(conversation: Conversation, model: str) -> dict:
    if conversation.provider is None:
        return {"params": {}, "system_prompt": ""}
    return conversation.provider.defaults_for(model)


def apply_model_change(conversation: Conversation, old_model: str) -> bool:
    """After the model of a conversation changed: give it the new model's admin defaults.

    Only while nothing has been said and the settings are still the old model's defaults (that
    is, the user has not changed them); returns whether anything changed.
    """
    if conversation.messages.exists():
        return False
    old = _defaults(conversation, old_model)
    if (conversation.params, conversation.system_prompt) != (old["params"], old["system_prompt"]):
        return False
    new = _defaults(conversation, conversation.model)
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


# -- views ------------------------------------------------------------------------------------


@require_POST
@login_required
def save_settings(request, code):
    """Save the whole settings form, or nothing (then each bad field says why)."""
    conversation = get_conversation(request, code)
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
    conversation = get_conversation(request, code)
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
    conversation = get_conversation(request, code)
    preset = _get_preset(request, preset_id)
    error = apply_preset(conversation, preset)
    if error:
        return _presets_response(request, conversation, preset_error=error)
    return HttpResponseClientRefresh()  # the model, the settings and the header all change


@require_POST
@login_required
def delete_preset(request, code, preset_id):
    conversation = get_conversation(request, code)
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
