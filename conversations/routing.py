from django.urls import path

from .consumers import ChatConsumer

websocket_urlpatterns = [
    path("ws/c/<str:code>/", ChatConsumer.as_asgi()),
]
