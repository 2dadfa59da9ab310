from django.apps import AppConfig


class ChargingConfig(AppConfig):
    # Django's own `sessions` app (needed by login) owns the label "sessions".
    name = "sessions"
    label = "charging"
    verbose_name = "Charging sessions"

    def ready(self):
        # The lower layers call up only through what is registered here.
        from evpay import exceptions
        from sessions import enqueue, journal, receivers
        from terminals import gateway, signals

        gateway.use_journal(journal.RequestJournal())
        exceptions.register_retry(
            "charging.terminaltransaction", lambda record: enqueue.recover(int(record.subject_id))
        )
        signals.terminal_offline.connect(
            receivers.raise_offline_exception, dispatch_uid="charging.offline_exception"
        )
        signals.closing_reported.connect(
            receivers.reconcile_closing, dispatch_uid="charging.reconcile_closing"
        )
