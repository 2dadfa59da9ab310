"""Events of the fleet that other apps act on; the fleet itself never imports those apps.

Receivers are connected in their app's `ready()`; `send` (not `send_robust`) is used, so a
receiver's error reaches the job that sent the event and is recorded on its run.
"""

from django.dispatch import Signal

# A terminal was marked offline after consecutive failed status polls. Arguments: terminal,
# actor. The charging app raises an exception for staff if sessions are open on it.
terminal_offline = Signal()

# A terminal answered a period closing with its totals. Arguments: closing (PeriodClosing,
# still pending), totals (list of terminals.opi BrandTotal), actor. The charging app
# reconciles them against its captures and sets the closing's state.
closing_reported = Signal()
