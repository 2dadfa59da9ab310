"""The project's own 404 page while DEBUG is on (the `make run` demo)."""

from django.conf import settings
from django.core.exceptions import MiddlewareNotUsed
from django.http import Http404
from django.urls import Resolver404, get_resolver, resolve


class ProjectNotFoundMiddleware:
    """Answer 404s with handler404 (templates/404.html), as production does, despite DEBUG.

    With DEBUG on Django never calls handler404: it shows its technical page, which lists
    every URL pattern to whoever asks. The demo runs with DEBUG on (dev secret key, no HTTPS
    redirect) and is shown to people, so it should behave like production here.
    EVPAY_TECHNICAL_404=1 brings the technical page back for debugging URL patterns. Without
    DEBUG this middleware is not used at all: Django calls handler404 itself.
    """

    def __init__(self, get_response):
        if not settings.DEBUG or settings.EVPAY_TECHNICAL_404:
            raise MiddlewareNotUsed
        self.get_response = get_response

    def __call__(self, request):
        # An unknown URL fails in URL resolution, before any middleware hook that sees
        # exceptions; resolving here first is the one place to catch it. (Placed after
        # CommonMiddleware, whose APPEND_SLASH redirect still applies to this 404.)
        try:
            resolve(request.path_info, getattr(request, "urlconf", None))
        except Resolver404 as exc:
            return self._not_found(request, exc)
        return self.get_response(request)

    def process_exception(self, request, exception):
        # Http404 raised by a view (get_object_or_404 and friends).
        if isinstance(exception, Http404):
            return self._not_found(request, exception)
        return None

    def _not_found(self, request, exception):
        handler = get_resolver(getattr(request, "urlconf", None)).resolve_error_handler(404)
        return handler(request, exception=exception)
