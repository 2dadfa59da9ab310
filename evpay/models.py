from django.db import models


class StaffPermissions(models.Model):
    """Holds the role permissions that belong to no single model; has no table."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [
            ("view_dashboard", "Can view the back-office pages"),
            ("operate", "Can act on sessions, exceptions and terminals"),
            ("configure", "Can configure terminals, tariffs and users"),
        ]

    def __str__(self):
        return "staff permissions"


class Heartbeat(models.Model):
    """Last time a background component proved it was alive (worker, beat, device channel)."""

    name = models.CharField(max_length=64, unique=True)
    seen_at = models.DateTimeField()
    detail = models.CharField(max_length=200, blank=True)

    def __str__(self):
        return f"{self.name} @ {self.seen_at:%Y-%m-%d %H:%M:%S}"
