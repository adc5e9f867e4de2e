"""The app's URLs: each room's views, and the one URL of a conversation (chat page or playground)."""

from django.urls import include, path

from conversations import pages
from conversations.accounts import views as accounts
from conversations.chat import settings_panel, views
from conversations.library import views as library
from conversations.playground import views as playground

urlpatterns = [
    path("", views.home, name="home"),
    path("c/new/", views.new_conversation, name="new_conversation"),
    path("c/<uuid:code>/", pages.conversation, name="conversation"),
    path("c/<uuid:code>/rename/", views.rename, name="rename"),
    path("c/<uuid:code>/delete/", views.delete, name="delete"),
    path("c/<uuid:code>/models/", views.model_options, name="model_options"),
    path("c/<uuid:code>/model/", views.set_model, name="set_model"),
    path("", include(settings_panel.urlpatterns)),
    path("", include(library.urlpatterns)),
    path("", include(accounts.urlpatterns)),
    path("", include(playground.urlpatterns)),
]
