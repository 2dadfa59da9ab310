"""The soak run: the real stack under random faults, then our books against the terminals'.

See `manage.py soak --help` and the README's reliability section. Processes: one emulator
process, the device-channel service, N Celery worker processes, gunicorn for the charger
API, two OCPP servers; in this process a sweeper (what beat does, every few seconds), the
traffic simulator (chargers over the API and, for `ocpp_share` of the terminals, emulated
OCPP chargers over real WebSockets given both servers' URLs; drivers) and a chaos thread for
process-level faults.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import statistics
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

from django.apps import apps
from django.conf import settings
from django.db import connection, models
from django.db.models import Exists, OuterRef

from evpay.audit import Actor
from evpay.models import AuditEvent, ExceptionRecord
from evpay.testbed.ledger_check import compare
from evpay.testbed.ocpp_world import link_connector, session_started_on
from evpay.testbed.simulator import Connector, Options, Simulator, http_json
from evpay.testbed.supervisor import MANAGE, PYTHON, Child, free_port, stop_all, worker_command
from sessions.models import (
    MONEY_OPERATIONS,
    ApiKey,
    ChargingSession,
    SessionState,
    Tariff,
    TerminalTransaction,
)
from sessions.services import mark_unplugged
from sessions.tasks import recovery_sweep_task, session_guard_task
from terminals.emulator.cards import CARDS
from terminals.models import ChargePoint, OcppVersion, Site, Terminal
from terminals.models import Connector as ConnectorModel

log = logging.getLogger("evpay.soak")

# Terminal-level faults the simulator injects through the emulator's control API.
SOAK_FAULTS = [
    ({"kind": "drop_before_commit", "operation": "capture"}, 3),
    ({"kind": "drop_after_commit", "operation": "capture"}, 3),
    ({"kind": "drop_after_commit", "operation": "authorise"}, 2),
    ({"kind": "drop_before_commit", "operation": "authorise"}, 1),
    ({"kind": "no_answer", "operation": "capture"}, 2),
    ({"kind": "slow", "operation": "capture", "delay": 2}, 2),
    ({"kind": "busy", "operation": "capture"}, 2),
    ({"kind": "garbage", "operation": "release"}, 1),
    # The whole card number in CardPAN and on the receipts: card_numbers_at_rest must stay 0.
    ({"kind": "full_pan", "operation": "authorise"}, 1),
    ("offline", 2),
]
SHORT_TIMEOUTS = {
    "authorise": 40,
    "card_token": 30,
    "capture": 6,
    "release": 6,
    "repeat_last_message": 5,
    "ticket_reprint": 5,
    "status": 3,
    "brands": 3,
    "closing": 10,
    "mifare_uid": 20,
}


class SoakSimulator(Simulator):
    """The demo simulator with the soak's fault list, counting what it injects."""

    def _maybe_fault(self, connector):
        if self.random.random() >= self.options.fault_rate:
            return
        fault = self.random.choices([f for f, _ in SOAK_FAULTS], [w for _, w in SOAK_FAULTS])[0]
        tid = connector.terminal_id
        try:
            if fault == "offline":
                self._control("POST", f"/terminals/{tid}/offline", {"offline": True})
                self.stats.add("fault.terminal_offline")
                threading.Timer(
                    3,
                    lambda: self._control("POST", f"/terminals/{tid}/offline", {"offline": False}),
                ).start()
            else:
                self._control(
                    "POST",
                    f"/terminals/{tid}/faults",
                    {**fault, "count": 1, "commit": True}
                    if fault["kind"] == "slow"
                    else {**fault, "count": 1},
                )
                self.stats.add(f"fault.{fault['kind']}.{fault['operation']}")
        except Exception as exc:
            log.info("could not set fault on %s: %s", tid, exc)


class Soak:
    def __init__(
        self,
        *,
        sessions,
        terminals,
        fault_rate,
        seed,
        time_limit,
        workers,
        window,
        stdout,
        dialect="ccv",
        ocpp_share=0.5,
        emulator_args=(),
        worker_concurrency=8,
        web_workers=2,
        web_threads=8,
    ):
        self.sessions, self.terminals, self.fault_rate = sessions, terminals, fault_rate
        self.dialect = dialect
        # benchmarks/fleet_throughput.py: its terminals' latencies and auto-tap, and a stack
        # sized for hundreds of terminals.
        self.emulator_args = list(emulator_args)
        self.worker_concurrency = worker_concurrency
        self.web_workers, self.web_threads = web_workers, web_threads
        if not 0 <= ocpp_share <= 1:
            raise ValueError(f"ocpp_share must be between 0 and 1, not {ocpp_share!r}")
        # Whole terminals (both connectors) go to OCPP chargers, alternately 1.6 and 2.0.1.
        self.ocpp_terminals = round(terminals * ocpp_share)
        self.chargers: dict[str, dict] = {}
        self.ocpp_servers: list[Child] = []
        self.seed, self.time_limit, self.workers_n, self.window = seed, time_limit, workers, window
        self.stdout = stdout
        self.random = random.Random(seed)
        self.run_id = uuid.uuid4().hex[:6]
        self.log_dir = Path(settings.VAR_DIR) / "soak" / self.run_id
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.children: list[Child] = []
        self.workers: list[Child] = []
        self.workers_started = 0
        self.chaos = Counter()
        self.stop = threading.Event()
        self.env = {
            "EVPAY_SENT_GRACE_SECONDS": "5",
            "EVPAY_RECOVERY_WINDOW_MINUTES": str(max(1, round(window / 60))),
            "EVPAY_AUTHORISE_GIVE_UP_MINUTES": str(max(1, round(window / 120))),
            # A remote start the charger does not answer or does not follow with a transaction
            # is released after these: seconds, not the production minutes.
            "EVPAY_OCPP_COMMAND_TIMEOUT_SECONDS": "8",
            "EVPAY_OCPP_START_TIMEOUT_SECONDS": "12",
            "PYTHONUNBUFFERED": "1",
        }

    def say(self, text: str) -> None:
        self.stdout.write(text)
        self.stdout.flush()

    # ---------------------------------------------------------------- setup
    def _start(self, name, argv) -> Child:
        child = Child(name, argv, self.log_dir, self.env)
        self.children.append(child)
        return child

    def _start_worker(self) -> Child:
        # A running count, not len(workers): a replacement for a killed worker gets a new name.
        self.workers_started += 1
        n = self.workers_started
        worker = self._start(
            f"worker{n}", worker_command(self.worker_concurrency, f"soak{self.run_id}-{n}@%h")
        )
        self.workers.append(worker)
        return worker

    def _device_channel_argv(self) -> list[str]:
        return (
            MANAGE
            + ["device_channel", "--host", "127.0.0.1", "--port", str(self.channel1_port)]
            # Every emulated terminal connects from 127.0.0.1: the per-address bound is the
            # fleet's, not one terminal's (8 made authorisations abort "delivery not confirmed").
            + ["--max-per-address", str(max(8, 2 * self.terminals))]
            + ["--max-connections", str(max(256, 2 * self.terminals))]
        )

    def setup(self):
        self.channel1_port = free_port()
        self.device_channel = self._start(
            "device_channel",
            self._device_channel_argv(),
        )
        self.device_channel.wait_for_log("device channel listening")
        prefix = f"9{self.random.randint(0, 999):03d}"
        while Terminal.objects.filter(terminal_id__startswith=prefix).exists():
            prefix = f"9{self.random.randint(0, 999):03d}"
        emulator = self._start(
            "emulator",
            [
                PYTHON,
                "-m",
                "terminals.emulator",
                "--count",
                str(self.terminals),
                "--host",
                "127.0.0.1",
                "--base-port",
                "0",
                "--control-port",
                "0",
                "--channel1",
                "pos",
                "--pos-host",
                "127.0.0.1",
                "--pos-port",
                str(self.channel1_port),
                "--card-wait",
                "20",
                "--delivery-timeout",
                "10",
                "--terminal-prefix",
                prefix,
                "--seed",
                str(self.seed),
                "--dialect",
                self.dialect,
                *self.emulator_args,
            ],
        )
        emulator.wait_for_log('"ready": true')
        ready = json.loads(
            next(line for line in emulator.output().splitlines() if line.startswith("{"))
        )
        self.control_url = f"http://127.0.0.1:{ready['control_port']}"
        self.site = Site.objects.create(name=f"Soak {self.run_id}", currency="EUR")
        Tariff.objects.create(
            site=self.site,
            name="Soak",
            price_per_kwh_minor=45,
            start_fee_minor=25,
            authorise_amount_minor=5000,
            idle_fee_per_minute_minor=0,
        )
        self.api_key = ApiKey.issue(f"soak {self.run_id}", self.site)[1]
        self.connectors = []
        for info in ready["terminals"]:
            terminal = Terminal.objects.create(
                terminal_id=info["terminal_id"],
                name=f"Soak {info['terminal_id']}",
                site=self.site,
                host=info["host"],
                profile={
                    "port0": info["port0"],
                    "channel1_listener": "pos",
                    # One workstation id per terminal: all emulated terminals share one
                    # address, so for a dialect without TerminalID on channel 1 the
                    # workstation and our RequestID are what tell their requests apart.
                    "workstation_id": f"SOAK{info['terminal_id'][-3:]}",
                    "timeouts": SHORT_TIMEOUTS,
                    "connect_timeout": 2,
                    # The minimal dialect has no Diagnosis: Login answers prove it is there.
                    "status_request": "login" if self.dialect == "minimal" else "status",
                },
            )
            index = len(self.connectors) // 2
            charge_point = version = None
            if index < self.ocpp_terminals:
                version = OcppVersion.V16 if index % 2 == 0 else OcppVersion.V201
                charge_point = ChargePoint.objects.create(
                    identity=f"SOAK-{self.run_id}-{info['terminal_id']}",
                    site=self.site,
                    name=f"Soak OCPP {version}",
                )
                self.chargers[charge_point.identity] = {
                    "password": charge_point.set_new_password(),
                    "version": version,
                    "connectors": 2,
                }
            for plug in (1, 2):
                c = ConnectorModel.objects.create(
                    terminal=terminal,
                    label=f"soak {plug}",
                    evse_id=f"NL*SOAK*{info['terminal_id']}*{plug}",
                )
                if charge_point is not None:
                    link_connector(c, charge_point, plug, version)
                self.connectors.append(
                    Connector(
                        c.evse_id,
                        terminal.terminal_id,
                        self.site.name,
                        charger_id=charge_point.identity if charge_point else "",
                        ocpp_connector=plug if charge_point else 0,
                    )
                )
        for _ in range(self.workers_n):
            self._start_worker()
        self.web_port = free_port()
        self.web = self._start(
            "web",
            [
                PYTHON,
                "-m",
                "gunicorn",
                "evpay.wsgi",
                "--bind",
                f"127.0.0.1:{self.web_port}",
                "--workers",
                str(self.web_workers),
                "--threads",
                str(self.web_threads),
            ],
        )
        # Two OCPP servers: every charger is given both URLs, so a dropped socket may come
        # back on the other process (and the first one must let go of it).
        self.ocpp_urls = []
        for n in (1, 2) if self.chargers else ():
            server = self._start(f"ocpp{n}", MANAGE + ["ocpp_server", "--port", "0"])
            self.ocpp_servers.append(server)
        for server in self.ocpp_servers:
            server.wait_for_log("OCPP server listening on")
            line = next(
                ln for ln in server.output().splitlines() if "OCPP server listening on" in ln
            )
            self.ocpp_urls.append(line.split(" listening on ")[1].split("/ocpp/")[0] + "/ocpp")
        for worker in self.workers:
            worker.wait_for_log("ready.")
        deadline = time.monotonic() + 60
        while True:
            try:
                http_json("GET", f"http://127.0.0.1:{self.web_port}/healthz", timeout=3)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    # ---------------------------------------------------------------- background threads
    def _sweeper(self):
        """What beat does, faster: the recovery sweep every 3 s, the session guard every 15 s;
        and, where PostgreSQL runs without autovacuum, what autovacuum does, every 5 min."""
        vacuum = self._autovacuum_is_off()
        for tick in itertools.count(1):
            if self.stop.wait(3):
                return
            try:
                recovery_sweep_task.delay()
                if tick % 5 == 0:
                    session_guard_task.delay()
            except Exception as exc:  # the broker may be restarting
                log.info("sweep enqueue failed: %s", exc)
            if vacuum and tick % 100 == 0:
                self._vacuum()

    def _autovacuum_is_off(self) -> bool:
        if connection.vendor != "postgresql":
            return False
        with connection.cursor() as cursor:
            cursor.execute("SHOW autovacuum")
            off = cursor.fetchone()[0] == "off"
        if off:
            self.say("PostgreSQL runs with autovacuum off: the soak vacuums its tables every 5 min")
        return off

    def _vacuum(self):
        # Every request row is inserted 'sent' and updated: without vacuum the dead rows and
        # stale statistics slow every query down as the run goes on (seen at ~8,000 sessions).
        tables = [
            m._meta.db_table
            for m in (ChargingSession, TerminalTransaction, AuditEvent, Terminal, ExceptionRecord)
        ]
        try:
            with connection.cursor() as cursor:
                cursor.execute(f"VACUUM (ANALYZE) {', '.join(tables)}")
        except Exception as exc:  # e.g. our own connection terminated by the chaos thread
            log.info("vacuum failed: %s", exc)
            connection.close()

    def _chaos(self):
        """Process-level faults: one every 20 s / (2 x fault rate), e.g. every 33 s at 0.3."""
        kinds = ["kill_worker", "device_channel_outage"]
        if self.ocpp_servers:
            kinds.append("ocpp_server_killed")
        if settings.CELERY_BROKER_URL.startswith("redis://"):
            kinds.append("broker_restart")
        if connection.vendor == "postgresql":
            kinds.append("db_connections_dropped")
        while not self.stop.wait(20 / max(self.fault_rate * 2, 0.1)):
            kind = self.random.choice(kinds)
            try:
                getattr(self, f"_chaos_{kind}")()
                self.chaos[kind] += 1
            except Exception as exc:
                log.warning("chaos %s failed: %s", kind, exc)

    def _chaos_kill_worker(self):
        # Wait for a capture in flight so the kill lands mid-payment when there is one.
        deadline = time.monotonic() + 5
        while (
            time.monotonic() < deadline
            and not TerminalTransaction.objects.filter(
                terminal__site=self.site, operation="capture", state="sent"
            ).exists()
        ):
            time.sleep(0.05)
        victim = self.random.choice([w for w in self.workers if w.alive()])
        victim.kill()
        self.workers.remove(victim)
        self._start_worker()

    def _chaos_ocpp_server_killed(self):
        """One OCPP server SIGKILLed (no close frames, its claims on its chargers left to
        lapse) and started again on its port 2 s later: its chargers retry until it is back,
        or move when a drop sends them to the other one; their queued messages follow."""
        index = self.random.randrange(len(self.ocpp_servers))
        victim = self.ocpp_servers[index]
        port = self.ocpp_urls[index].rsplit(":", 1)[1].split("/")[0]
        victim.kill()
        self.children.remove(victim)
        time.sleep(2)
        name = f"ocpp{index + 1}"
        self.ocpp_servers[index] = self._start(name, MANAGE + ["ocpp_server", "--port", port])

    def _chaos_device_channel_outage(self):
        # Receipts go unacknowledged meanwhile: the terminal then wants PrintLastTicket.
        self.device_channel.kill()
        self.children.remove(self.device_channel)
        time.sleep(2)
        self.device_channel = self._start(
            "device_channel",
            self._device_channel_argv(),
        )

    def _chaos_broker_restart(self):
        """What restarting a Redis that keeps nothing on disk does to this stack: every client
        of our database is disconnected and everything the broker held for us is gone (queued
        tasks, delivered-but-unacknowledged ones, queue bindings). Work lost with it must be
        found again from the database by the sweep. Other databases' clients are left alone."""
        import redis

        client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
        db = client.connection_pool.connection_kwargs.get("db", 0)
        own = client.client_id()
        queued = sum(client.llen(key) for key in client.scan_iter(match="celery*", _type="list"))
        self.chaos["broker_restart_messages_lost"] += queued + client.hlen("unacked")
        client.flushdb()
        for info in client.client_list():
            if int(info["db"]) == db and int(info["id"]) != own:
                client.client_kill_filter(_id=info["id"])

    def _chaos_db_connections_dropped(self):
        # Every connection of the workers, web and device channel; not this process's own.
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() AND pid <> %s",
                [self.main_backend_pid],
            )

    # ---------------------------------------------------------------- run
    def run(self) -> dict:
        started = time.monotonic()
        self.setup()
        self.main_backend_pid = (
            connection.connection.info.backend_pid if connection.vendor == "postgresql" else 0
        )
        self.say(
            f"soak {self.run_id}: {self.terminals} terminals ({self.ocpp_terminals} with OCPP "
            f"chargers, {len(self.ocpp_servers)} OCPP servers), {len(self.workers)} workers, "
            f"{self.sessions} sessions, fault rate {self.fault_rate}, seed {self.seed}; logs in {self.log_dir}"
        )
        # Every frame of every charger at INFO would be most of the soak's output.
        logging.getLogger("evpay.ocpp_charger.wire").setLevel(logging.WARNING)
        threads = [
            threading.Thread(target=self._sweeper, daemon=True),
            threading.Thread(target=self._chaos, daemon=True),
        ]
        for t in threads:
            t.start()
        simulator = SoakSimulator(
            Options(
                api_url=f"http://127.0.0.1:{self.web_port}/api/v1",
                control_url=self.control_url,
                keys={self.site.name: self.api_key},
                speed=10,
                fault_rate=self.fault_rate,
                seed=self.seed,
                max_sessions=self.sessions,
                duration=max(30, self.time_limit - self.window - 60),
                ocpp_urls=self.ocpp_urls,
                chargers=self.chargers,
                find_session=session_started_on,
            ),
            self.connectors,
        )
        sim_stats = simulator.run()
        self.say(
            f"traffic done after {time.monotonic() - started:.0f} s; waiting for recovery (window {self.window} s)"
        )
        self.stop.set()  # no more chaos
        self._settle_remaining()
        figures = self.figures(sim_stats, time.monotonic() - started)
        self.teardown()
        return figures

    def _settle_remaining(self):
        for worker in self.workers:  # replacements started by chaos must be up
            worker.wait_for_log("ready.")
        # The chargers are done: a session they left mid-way (time limit, or a start whose
        # answer never reached them) is unplugged now, so the window is spent settling it.
        for session in ChargingSession.objects.filter(
            site=self.site, state__in=["authorised", "charging", "stopping", "ended"]
        ):
            mark_unplugged(session, Actor.job("soak-end"))
        deadline = time.monotonic() + self.window
        while time.monotonic() < deadline:
            waiting = self._unresolved_sessions()
            unknown = TerminalTransaction.objects.filter(
                terminal__site=self.site, state__in=["sent", "unknown"]
            ).count()
            if not waiting and not unknown:
                break
            recovery_sweep_task.delay()
            session_guard_task.delay()
            time.sleep(3)

    def _unresolved_sessions(self) -> list:
        """Sessions neither closed nor in the exception queue: the system is still on them."""
        open_sessions = ChargingSession.objects.filter(site=self.site).exclude(
            state=SessionState.CLOSED
        )
        in_queue = ExceptionRecord.objects.filter(
            resolved_at__isnull=True, session_ref=OuterRef("public_id")
        )
        return list(open_sessions.exclude(Exists(in_queue)).values_list("public_id", flat=True))

    def figures(self, sim_stats: dict, elapsed: float) -> dict:
        _, ledger = http_json("GET", self.control_url + "/ledger", timeout=60)
        check = compare(ledger, self.site)
        sessions = ChargingSession.objects.filter(site=self.site)
        outcomes = Counter(sessions.values_list("close_reason", flat=True))
        outcomes = {k or "unfinished": v for k, v in outcomes.items()}
        faults = {
            k.removeprefix("fault."): v for k, v in sim_stats.items() if k.startswith("fault.")
        }
        # What the emulated chargers applied (a fault armed for one session may apply at a
        # later one of the same charger, or not before the run ends).
        faults.update(
            {
                "charger." + k.removeprefix("ocpp.fault."): v
                for k, v in sim_stats.items()
                if k.startswith("ocpp.fault.")
            }
        )
        ocpp_sessions = sessions.filter(connector__charge_point__isnull=False)
        ocpp_outcomes = Counter(ocpp_sessions.values_list("close_reason", flat=True))
        faults.update({f"process.{k}": v for k, v in self.chaos.items()})
        faults["duplicate_api_call"] = sim_stats.get("duplicate_api_call", 0)
        faults["wrong_card_presented"] = sim_stats.get("stop.wrong_card_presented", 0)
        durations = self._resolution_seconds()
        queued = ExceptionRecord.objects.filter(
            resolved_at__isnull=True, session_ref__in=sessions.values("public_id")
        )
        return {
            "run": self.run_id,
            "seconds": round(elapsed),
            "sessions": sessions.count(),
            "sessions_by_outcome": outcomes,
            "ocpp_sessions": ocpp_sessions.count(),
            "ocpp_sessions_by_outcome": {k or "unfinished": v for k, v in ocpp_outcomes.items()},
            "ocpp_charger_exceptions": self._charger_exceptions(),
            "faults_injected": faults,
            "double_captures": check["double_captures"],
            "lost_money": check["lost_money"],
            "ledger_disagreements": check["disagreements"],
            "wrong_card_stops": check["wrong_card_stops"],
            "unresolved_after_window": len(self._unresolved_sessions()),
            "in_exception_queue": len(queued),
            "exception_reasons": dict(Counter(queued.values_list("kind", flat=True))),
            "resolution_seconds": durations,
            "problems": check["problems"][:20],
            "card_numbers_at_rest": stored_card_numbers(),
        }

    def _charger_exceptions(self) -> dict:
        """Open charger-report exceptions of this run's chargers (also those about no
        session, e.g. a stop for a transaction never seen), by the report not applied."""
        titles = ExceptionRecord.objects.filter(
            resolved_at__isnull=True,
            kind=ExceptionRecord.Kind.CHARGER_REPORT,
            title__startswith=f"Charger SOAK-{self.run_id}-",
        ).values_list("title", flat=True)
        return dict(Counter(title.split(": ", 1)[-1] for title in titles))

    def _resolution_seconds(self) -> dict:
        """From a money request's send to the recovery that proved its outcome."""
        values = []
        events = AuditEvent.objects.filter(
            action="tx.recovery", subject_type="charging.terminaltransaction"
        )
        resolved = {int(e.subject_id): e.at for e in events.exclude(to_state="unknown")}
        money = TerminalTransaction.objects.filter(operation__in=MONEY_OPERATIONS)
        for tx in money.filter(pk__in=resolved, session__site=self.site):
            values.append((resolved[tx.pk] - tx.created_at).total_seconds())
        if not values:
            return {"count": 0}
        values.sort()
        p99 = values[min(len(values) - 1, round(0.99 * (len(values) - 1)))]
        return {
            "count": len(values),
            "median": round(statistics.median(values), 1),
            "p99": round(p99, 1),
        }

    def teardown(self):
        self.stop.set()
        stop_all(self.children)
        self.children.clear()
        # The emulator is gone: keep status polls of later runs away from these terminals.
        if getattr(self, "site", None) is not None:
            Terminal.objects.filter(site=self.site).update(enabled=False)
            ChargePoint.objects.filter(site=self.site).update(enabled=False)


def stored_card_numbers() -> int:
    """Text values anywhere in the database that hold a test card's full number (the
    simulator's full_pan fault makes the emulator send them): must be 0."""
    pans = {card.pan for card in CARDS.values() if len(card.pan) >= 13}  # not the PAN-less ones
    return sum(
        any(pan in text.replace(" ", "") for pan in pans) for _column, text in stored_texts()
    )


def stored_texts():
    """(table.column, text) for every non-empty text-like value of every table we keep."""
    for model in apps.get_models():
        if not model._meta.managed or model._meta.proxy:
            continue
        names = [
            f.name
            for f in model._meta.concrete_fields
            if isinstance(f, models.CharField | models.TextField | models.JSONField)
        ]
        if not names:
            continue
        for row in model.objects.values_list(*names).iterator():
            for name, value in zip(names, row, strict=True):
                if value not in (None, ""):
                    text = value if isinstance(value, str) else json.dumps(value)
                    yield f"{model._meta.db_table}.{name}", text
