from django.urls import path

from conversations.chat.consumer import ChatConsumer
from conversations.playground.consumer import PlaygroundConsumer

websocket_urlpatterns = [
    path("ws/c/<str:code>/", ChatConsumer.as_asgi()),
    path("ws/p/<str:code>/", PlaygroundConsumer.as_asgi()),  # text-completion playground
]
