from django.urls import path

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("signup/", views.signup, name="signup"),
    path("c/new/", views.new_conversation, name="new_conversation"),
    path("c/<uuid:code>/", views.conversation, name="conversation"),
    path("c/<uuid:code>/rename/", views.rename, name="rename"),
    path("c/<uuid:code>/delete/", views.delete, name="delete"),
    path("c/<uuid:code>/models/", views.model_options, name="model_options"),
    path("c/<uuid:code>/model/", views.set_model, name="set_model"),
]
