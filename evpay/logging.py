"""Request ids in every log line (set by middleware, read by a logging filter), and no
credential or card number in any log line (a filter on the handlers masks what a library
might print)."""

import contextvars
import logging
import re
import uuid

from evpay.pan import mask_pans

_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = _request_id.get()
        return True


# What a log line must never carry, wherever it comes from (our code, Django, a library):
# the secret part of an API key (the prefix stays: it names the key in the admin), the value
# of an Authorization header or a Bearer/Basic credential, and passwords in form or JSON text.
_SECRETS = (
    (re.compile(r"\b(evp_[0-9a-f]+_)[A-Za-z0-9_-]+"), r"\1[redacted]"),
    (re.compile(r"\bevp_[A-Za-z0-9_-]{16,}"), "evp_[redacted]"),
    (
        re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)[^,'\"\r\n]+"),
        r"\1[redacted]",
    ),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 [redacted]"),
    (
        re.compile(r"(?i)(passw(?:or)?d\d?['\"]?\s*[:=]\s*['\"]?)[^&\s,'\"]+"),
        r"\1[redacted]",
    ),
)


def redact(text: str) -> str:
    """`text` without credentials, and with card numbers masked to first six / last four."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return mask_pans(text)


class RedactSecretsFilter(logging.Filter):
    """Masks credentials in the formatted message and traceback before a handler writes them.

    A handler filter (settings.LOGGING), so it sees records from every logger that propagates
    to the root, including the ones libraries create.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class RequestIdMiddleware:
    """Takes X-Request-ID from a trusted proxy when it is well-formed, else makes one."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if _SAFE_ID.match(incoming) else uuid.uuid4().hex[:16]
        request.request_id = request_id
        token = _request_id.set(request_id)
        try:
            response = self.get_response(request)
        finally:
            _request_id.reset(token)
        response["X-Request-ID"] = request_id
        return response
