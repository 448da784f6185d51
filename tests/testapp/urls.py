from django.urls import include, path

from . import views

urlpatterns = [
    path("testapp/pg-sleep/<str:seconds>", views.pg_sleep),
    path("", include("bookstore.urls")),
]
