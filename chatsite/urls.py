from django.contrib import admin
from django.contrib.auth.views import LoginView
from django.urls import include, path

from conversations.accounts.views import LoginForm

urlpatterns = [
    path("admin/", admin.site.urls),
    # Before auth's own login: says why an account awaiting approval cannot log in yet.
    path("accounts/login/", LoginView.as_view(authentication_form=LoginForm), name="login"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("conversations.urls")),
]
