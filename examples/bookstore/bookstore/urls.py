from django.contrib import admin
from django.urls import path

from . import views

urlpatterns = [path("django/", views.index, name="index"), path("admin/", admin.site.urls)]
