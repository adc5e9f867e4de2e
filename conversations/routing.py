from django.urls import path

from .consumers import ChatConsumer
from .playground_consumer import PlaygroundConsumer

websocket_urlpatterns = [
    path("ws/c/<str:code>/", ChatConsumer.as_asgi()),
    path("ws/p/<str:code>/", PlaygroundConsumer.as_asgi()),  # text-completion playground
]
