"""The app's configuration: connects the login signal that adopts a language picked before login."""

from django.apps import AppConfig


class ConversationsConfig(AppConfig):
    name = "conversations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from conversations import i18n  # noqa: F401 - connects the login signal that adopts a language picked before login
