import uuid

from django.db import models
from django.utils.translation import gettext_lazy


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


class AuditEvent(models.Model):
    """Every state change and operator action: who/what, from, to, why, when. Append-only."""

    class ActorKind(models.TextChoices):
        USER = "user", gettext_lazy("Staff user")
        CHARGER = "charger", gettext_lazy("Charger")
        JOB = "job", gettext_lazy("Background job")
        TERMINAL = "terminal", gettext_lazy("Terminal")
        SYSTEM = "system", gettext_lazy("System")
        # Someone without an account on a public receipt page (issue #17).
        DRIVER = "driver", gettext_lazy("Driver (public page)")

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor_kind = models.CharField(max_length=10, choices=ActorKind.choices)
    actor_label = models.CharField(max_length=150)
    actor_user = models.ForeignKey(
        "auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    subject_type = models.CharField(max_length=60)  # model label, e.g. charging.chargingsession
    subject_id = models.CharField(max_length=64)
    # The session whose timeline shows this row (its opaque id), if any.
    session_ref = models.UUIDField(null=True, blank=True)
    action = models.CharField(max_length=60)
    from_state = models.CharField(max_length=40, blank=True)
    to_state = models.CharField(max_length=40, blank=True)
    reason = models.TextField(blank=True)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["at", "id"]
        indexes = [
            # Session detail timeline.
            models.Index(fields=["session_ref", "at"], name="audit_session_at"),
            # Terminal / exception detail pages.
            models.Index(fields=["subject_type", "subject_id"], name="audit_subject"),
        ]

    def __str__(self):
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor_label} {self.action} {self.subject_type}"


class ExceptionRecord(models.Model):
    """Something that needs a person: what happened, what to do, and who resolved it."""

    class Kind(models.TextChoices):
        UNKNOWN_OUTCOME = (
            "unknown_outcome",
            gettext_lazy("Outcome unknown past the recovery window"),
        )
        CAPTURE_FAILED = "capture_failed", gettext_lazy("Capture or release failed")
        AUTH_EXPIRY = "auth_expiry", gettext_lazy("Authorisation about to expire")
        TERMINAL_OFFLINE = "terminal_offline", gettext_lazy("Terminal offline with open sessions")
        CLOSING_MISMATCH = (
            "closing_mismatch",
            gettext_lazy("Period closing does not match our records"),
        )
        REFUSED_STOPS = "refused_stops", gettext_lazy("Repeated refused stop attempts")
        STRANDED_AUTHORISATION = "stranded_auth", gettext_lazy("Authorisation for a closed session")
        CONFIGURATION = "configuration", gettext_lazy("Terminal configuration")
        CHARGER_REPORT = "charger_report", gettext_lazy("Charger report that cannot be applied")
        OTHER = "other", gettext_lazy("Other")

    class Severity(models.IntegerChoices):
        # Ordered so that "most severe first" is a plain descending sort.
        INFO = 10, gettext_lazy("Info")
        WARNING = 20, gettext_lazy("Warning")
        CRITICAL = 30, gettext_lazy("Critical")

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    severity = models.PositiveSmallIntegerField(choices=Severity.choices)
    title = models.CharField(max_length=200)
    # What it is about (model label + pk) and the session whose page shows it, if any.
    subject_type = models.CharField(max_length=60, blank=True)
    subject_id = models.CharField(max_length=64, blank=True)
    session_ref = models.UUIDField(null=True, blank=True)
    terminal_ref = models.CharField(max_length=16, blank=True)  # CCV terminal id
    # Raisers pass a key so the same problem is not raised twice while it is open.
    dedupe_key = models.CharField(max_length=120)
    what_happened = models.TextField()
    suggested_actions = models.TextField(blank=True)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        "auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    resolution_note = models.TextField(blank=True)
    # Who is looking at it, so two operators do not work the same exception unknowingly.
    assignee = models.ForeignKey(
        "auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        verbose_name = gettext_lazy("exception")
        ordering = ["-severity", "-created_at"]
        constraints = [
            # evpay.exceptions.raise_exception relies on this to stay idempotent.
            models.UniqueConstraint(
                fields=["dedupe_key"],
                condition=models.Q(resolved_at__isnull=True),
                name="exception_one_open_per_key",
            )
        ]
        indexes = [
            # The queue: unresolved, most severe and newest first.
            models.Index(
                fields=["-severity", "-created_at"],
                condition=models.Q(resolved_at__isnull=True),
                name="exception_open_queue",
            ),
        ]

    def __str__(self):
        return f"[{self.get_severity_display()}] {self.title}"

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None


class JobRun(models.Model):
    """One run of a background job staff care about (sweeps, polls, closings, refreshes).

    The UI reads these rows, never Celery's result backend.
    """

    class Outcome(models.TextChoices):
        RUNNING = "running", gettext_lazy("Running")
        OK = "ok", gettext_lazy("OK")
        PARTIAL = "partial", gettext_lazy("Partly failed")
        # "Not now" (terminal busy) with another attempt scheduled: not a failure yet.
        RETRYING = "retrying", gettext_lazy("Retrying")
        FAILED = "failed", gettext_lazy("Failed")

    kind = models.CharField(max_length=40)  # e.g. recovery_sweep, status_poll, closing
    subject = models.CharField(max_length=120, blank=True)  # e.g. a terminal id
    triggered_by = models.CharField(max_length=150, default="schedule")
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=10, choices=Outcome.choices, default=Outcome.RUNNING)
    counts = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [models.Index(fields=["kind", "-started_at"], name="jobrun_kind_started")]

    def __str__(self):
        return f"{self.kind} {self.subject} {self.outcome}"

    @property
    def duration_seconds(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


class RateCounter(models.Model):
    """Hits per key in a fixed time window, for limits that must hold across every worker
    and host (evpay/throttle.py); the database is the one store they all share."""

    key = models.CharField(max_length=100)
    window_start = models.DateTimeField()
    count = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            # throttle.hit's get_or_create relies on one row per key and window.
            models.UniqueConstraint(fields=["key", "window_start"], name="rate_counter_window")
        ]
        # throttle.hit drops expired windows by age.
        indexes = [models.Index(fields=["window_start"], name="rate_counter_age")]

    def __str__(self):
        return f"{self.key} @ {self.window_start:%Y-%m-%d %H:%M}: {self.count}"


class StaffPreferences(models.Model):
    """A staff member's own settings: for now the language of the staff pages.

    Read once at log-in into the session (evpay/i18n.py), so a page costs no extra query.
    """

    user = models.OneToOneField(
        "auth.User", on_delete=models.CASCADE, primary_key=True, related_name="evpay_preferences"
    )
    # Empty: no choice made, the browser's language (Accept-Language) decides.
    language = models.CharField(max_length=10, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = gettext_lazy("staff preferences")
        verbose_name_plural = gettext_lazy("staff preferences")

    def __str__(self):
        return f"preferences of {self.user_id}"
