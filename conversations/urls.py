from django.urls import include, path

from . import accounts, chat_settings, i18n, library, playground, views

urlpatterns = [
    path("", views.home, name="home"),
    path("signup/", views.signup, name="signup"),
    path("c/new/", views.new_conversation, name="new_conversation"),
    path("c/<uuid:code>/", views.conversation, name="conversation"),
    path("c/<uuid:code>/rename/", views.rename, name="rename"),
    path("c/<uuid:code>/delete/", views.delete, name="delete"),
    path("c/<uuid:code>/models/", views.model_options, name="model_options"),
    path("c/<uuid:code>/model/", views.set_model, name="set_model"),
    path("", include(chat_settings.urlpatterns)),
    path("", include(library.urlpatterns)),
    path("", include(accounts.urlpatterns)),
    path("", include(playground.urlpatterns)),
    path("", include(i18n.urlpatterns)),
]
