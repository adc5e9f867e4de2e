"""The websocket routes: a chat page's socket and a playground page's socket, by conversation code."""

from django.urls import path

from conversations.chat.consumer import ChatSocket
from conversations.playground.consumer import PlaygroundSocket

# django-stubs types path() for views; Channels routes ASGI consumers with it all the same.
websocket_urlpatterns = [
    path("ws/c/<str:code>/", ChatSocket.as_asgi()),  # type: ignore[arg-type]
    path("ws/p/<str:code>/", PlaygroundSocket.as_asgi()),  # type: ignore[arg-type]  # text-completion playground
]
