from django.urls import path

from billing import views

app_name = "payments"

urlpatterns = [
    path("webhooks/<slug:provider>", views.provider_webhook, name="webhook"),
    path("return", views.payment_return, name="return"),
]
