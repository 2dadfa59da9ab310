from django.apps import AppConfig


class ChargingConfig(AppConfig):
    # Django's own `sessions` app (needed by login) owns the label "sessions".
    name = "sessions"
    label = "charging"
    verbose_name = "Charging sessions"
