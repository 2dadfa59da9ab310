import logging
import socket

from celery import shared_task
from django.utils import timezone

from evpay.models import Heartbeat

log = logging.getLogger(__name__)


@shared_task(name="evpay.heartbeat", ignore_result=True)
def heartbeat(name: str = "worker") -> None:
    """Proves a worker consumes from the broker; beat schedules it, /healthz reports its age."""
    Heartbeat.objects.update_or_create(
        name=name, defaults={"seen_at": timezone.now(), "detail": socket.gethostname()[:200]}
    )
