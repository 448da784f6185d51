from django.urls import include, path

from . import views

urlpatterns = [
    path("testapp/pg-sleep/<str:seconds>", views.pg_sleep),
    path("testapp/http/echo", views.http_echo),
    path("testapp/http/cookies", views.http_cookies),
    path("testapp/http/sse", views.http_sse),
    path("testapp/http/stream-db", views.http_stream_db),
    path("testapp/http/file", views.http_file),
    path("testapp/http/path/<path:rest>", views.http_path),
    path("", include("bookstore.urls")),
]
