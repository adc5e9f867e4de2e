"""The language of every page and socket: English or Simplified Chinese.

A signed-in user's saved choice (Profile.language) wins; otherwise the language cookie set by the
switcher, then the browser's Accept-Language (Django's LocaleMiddleware). Websockets do not pass
through Django's middleware, so a consumer asks `aactivate_for_scope()` once it knows its user:
everything it renders afterwards, and every generation it starts (a task inherits the language),
is in the owner's language.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.signals import user_logged_in
from django.dispatch import receiver
from django.http import HttpRequest
from django.utils import translation
from django.utils.deprecation import MiddlewareMixin

from conversations.models import Profile


def supported(code: str | None) -> str | None:
    """The supported language for a code ("zh-cn" -> "zh-hans"), or None."""
    if not code:
        return None
    try:
        return translation.get_supported_language_variant(code)
    except LookupError:
        return None


def saved_language(user) -> str | None:
    """The language the user chose with the switcher, if any."""
    if user is None or not user.is_authenticated:
        return None
    return supported(Profile.objects.filter(user=user).values_list("language", flat=True).first())


async def asaved_language(user) -> str | None:
    if user is None or not user.is_authenticated:
        return None
    return supported(await Profile.objects.filter(user=user).values_list("language", flat=True).afirst())


class UserLanguageMiddleware(MiddlewareMixin):
    """After LocaleMiddleware and authentication: a signed-in user's saved language wins."""

    def process_request(self, request):
        language = saved_language(request.user)
        if language:
            translation.activate(language)
            request.LANGUAGE_CODE = language


def scope_language(scope) -> str:
    """The language a websocket's page would get from its cookie and Accept-Language header."""
    headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope.get("headers", [])}
    request = HttpRequest()
    request.COOKIES = scope.get("cookies") or {}
    request.META = {"HTTP_ACCEPT_LANGUAGE": headers.get("accept-language", "")}
    request.path_info = scope.get("path", "/")
    return translation.get_language_from_request(request)


async def aactivate_for_scope(scope) -> str:
    """Activate the language of a websocket's user for the rest of the consumer's task."""
    language = await asaved_language(scope.get("user")) or scope_language(scope)
    translation.activate(language)
    return language


@receiver(user_logged_in, dispatch_uid="conversations.i18n.adopt_language")
def adopt_language(sender, request, user, **kwargs):
    """A language picked on the login or sign-up page becomes the account's, unless it has one already."""
    if request is None:
        return
    language = supported(request.COOKIES.get(settings.LANGUAGE_COOKIE_NAME))
    if language is None:
        return
    profile, _ = Profile.objects.get_or_create(user=user)
    if not profile.language:
        profile.language = language
        profile.save(update_fields=["language"])
