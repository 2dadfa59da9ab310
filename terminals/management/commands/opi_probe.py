"""manage.py opi_probe HOST:PORT ACTION [AMOUNT]: send one O.P.I. request and show everything.

For commissioning and fault finding: prints the outcome, every channel-1 message (displays,
receipts, DeliveryBox), the parsed response and, when the answer could not be used as one,
the raw text the terminal sent. ``--request-type`` and ``--application-sender`` try the names
another terminal implementation may expect without editing a stored profile. It allocates its
own RequestID, so it is not for money that the back-office must account for.
"""

import json

from django.core.management.base import BaseCommand, CommandError

from terminals.opi.client import OpiClient, Outcome, request_id_from_time
from terminals.opi.device_channel import RecordingDeviceHandler
from terminals.opi.errors import MalformedMessage, ProfileError
from terminals.opi.messages import OriginalTransaction, is_valid_request_id, parse_amount
from terminals.opi.profile import Operation, TerminalProfile

ACTIONS = {
    "status": Operation.STATUS,
    "brands": Operation.BRANDS,
    "authorise": Operation.AUTHORISE,
    "token": Operation.CARD_TOKEN,
    "capture": Operation.CAPTURE,
    "release": Operation.RELEASE,
    "recover": Operation.REPEAT_LAST_MESSAGE,
    "reprint": Operation.TICKET_REPRINT,
    "closing": Operation.CLOSING,
    "reconciliation": Operation.RECONCILIATION,
    "mifare": Operation.MIFARE_UID,
    "abort": Operation.ABORT,
    "login": Operation.LOGIN,
    "logoff": Operation.LOGOFF,
}
NEEDS_AMOUNT = {Operation.AUTHORISE, Operation.CAPTURE, Operation.RELEASE}
NEEDS_ORIGINAL = {Operation.CAPTURE, Operation.RELEASE}


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise CommandError(f"expected HOST:PORT, not {value!r}")
    return host.strip("[]"), int(port)


class Command(BaseCommand):
    help = "Send one O.P.I. request to a terminal (or the emulator) and print the result."

    def add_arguments(self, parser):
        parser.add_argument("target", help="terminal channel-0 address, HOST:PORT")
        parser.add_argument("action", choices=sorted(ACTIONS))
        parser.add_argument(
            "amount", nargs="?", help="major units, e.g. 12.50 (authorise, capture, release)"
        )
        parser.add_argument("--currency", default="EUR")
        parser.add_argument(
            "--channel1",
            choices=("terminal", "pos"),
            default="pos",
            help="who listens on channel 1 (default: pos, we listen)",
        )
        parser.add_argument(
            "--port1", type=int, default=4102, help="terminal channel-1 port (--channel1 terminal)"
        )
        parser.add_argument(
            "--pos-host", default="0.0.0.0", help="address we listen on (--channel1 pos)"
        )
        parser.add_argument(
            "--pos-port", type=int, default=4102, help="port we listen on (--channel1 pos)"
        )
        parser.add_argument("--workstation", default="POS1", help="WorkstationID")
        parser.add_argument(
            "--application-sender", default="evpay", help="ApplicationSender (default: evpay)"
        )
        parser.add_argument(
            "--request-type",
            metavar="NAME",
            help="RequestType sent for this action (default: the profile's name for it)",
        )
        parser.add_argument("--request-id", help="RequestID (default: 9 digits from the clock)")
        parser.add_argument("--timeout", type=float, help="seconds to wait for the response")
        parser.add_argument("--connect-timeout", type=float, default=5.0)
        parser.add_argument("--encoding", default="UTF-8", choices=("UTF-8", "ISO-8859-1"))
        parser.add_argument("--stan", help="STAN of the authorisation (capture, release)")
        parser.add_argument("--approval", help="ApprovalCode of the authorisation")
        parser.add_argument("--timestamp", help="TimeStamp of the authorisation")
        parser.add_argument("--terminal-id", help="TerminalID of the authorisation")
        parser.add_argument(
            "--refuse-delivery",
            action="store_true",
            help="answer DeliveryBox with Failure (default: confirm)",
        )

    def handle(self, *args, **options):
        host, port = _host_port(options["target"])
        operation = ACTIONS[options["action"]]
        request_id = options["request_id"] or request_id_from_time()
        if not is_valid_request_id(request_id):
            raise CommandError("--request-id must be 1-9 digits")
        request_types = {}
        if options["request_type"] is not None:
            request_types[str(operation)] = options["request_type"]
        try:
            profile = TerminalProfile(
                host=host,
                port0=port,
                port1=options["port1"],
                channel1_listener=options["channel1"],
                pos_listen_host=options["pos_host"],
                pos_listen_port=options["pos_port"],
                workstation_id=options["workstation"],
                application_sender=options["application_sender"],
                encoding=options["encoding"],
                connect_timeout=options["connect_timeout"],
                request_types=request_types,
            )
        except ProfileError as exc:
            raise CommandError(str(exc)) from None

        kwargs = {"timeout": options["timeout"]}
        currency = options["currency"]
        if operation in NEEDS_AMOUNT:
            if not options["amount"]:
                raise CommandError(f"{options['action']} needs an AMOUNT, e.g. 12.50")
            try:
                kwargs["amount_minor"] = parse_amount(options["amount"], currency, "AMOUNT")
            except MalformedMessage as exc:
                raise CommandError(str(exc)) from None
            kwargs["currency"] = currency
        if operation in NEEDS_ORIGINAL:
            if not options["stan"] or not options["terminal_id"]:
                raise CommandError(f"{options['action']} needs --stan and --terminal-id")
            kwargs["original"] = OriginalTransaction(
                terminal_id=options["terminal_id"],
                stan=options["stan"],
                timestamp=options["timestamp"],
                approval_code=options["approval"],
            )

        refuse = options["refuse_delivery"]
        handler = RecordingDeviceHandler(on_delivery_box=lambda request: not refuse)
        client = OpiClient(profile, handler)
        result = client.perform(operation, request_id, **kwargs)

        self.stdout.write(
            f"request {request_id} {operation} -> {result.outcome}"
            f" (OverallResult {result.overall_result or '-'}, sent {result.sent})"
        )
        if result.detail:
            self.stdout.write(f"detail: {result.detail}")
        if result.unsupported:
            self.stdout.write(f"unsupported: the terminal does not implement {operation}")
        if result.error_text or result.private_text:
            said = " | ".join(t for t in (result.error_text, result.private_text) if t)
            self.stdout.write(f"terminal text: {said}")
        for message in result.device_messages:
            self.stdout.write(f"channel 1 [{message.target}] " + " | ".join(message.lines))
        usable = result.response is not None and result.outcome not in (
            Outcome.UNKNOWN,
            Outcome.FAILED_OTHER,
        )
        if result.raw is not None and not usable:
            # What the terminal actually sent is the one thing that explains an answer we
            # could not use. Indented, so no line of it can pass for the JSON below.
            self.stdout.write("raw response:")
            for line in result.raw.splitlines() or [""]:
                self.stdout.write(f"  {line}")
        data = result.to_dict()
        data["raw_response"] = result.raw
        self.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str))
