"""Traffic simulator: plays chargers (through the charger API, or over OCPP) and drivers
(through the emulator's control interface) so the demo shows sessions, stops by card,
captures, declines, aborts, faults, recovery and exceptions within minutes.

One thread per connector. A connector of an OCPP charger is played by an EmulatedCharger
(evpay.testbed.ocpp_charger, real WebSockets to the OCPP server): the driver plugs in, the
central system starts the session and the terminal asks for the card. The others go over HTTP
exactly as a charger controller would. Nothing here touches the database: the connector list
and, for OCPP sessions, which session the cable-in started (`Options.find_session`: a real
charger is never told) come from the caller.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from evpay.testbed import ocpp_charger

log = logging.getLogger("evpay.simulator")

# Weighted cards a driver starts with; the wallet variant shares its PAR with the card.
START_CARDS = [
    ("visa_ok", 30),
    ("mc_ok", 25),
    ("maestro_ok", 12),
    ("amex_ok", 8),
    ("visa_declined", 6),
    ("mc_lowfunds", 5),
    ("visa_abort", 5),
]
WALLET_OF = {"visa_ok": "visa_wallet", "mc_ok": "mc_wallet"}
FAULTS = [
    ({"kind": "drop_after_commit", "operation": "capture"}, 3),
    ({"kind": "drop_before_commit", "operation": "capture"}, 2),
    ({"kind": "busy", "operation": "capture"}, 2),
    ({"kind": "drop_after_commit", "operation": "authorise"}, 1),
    ({"kind": "garbage", "operation": "release"}, 1),
    # The terminal sends the whole card number (CardPAN, receipts): nothing may store it.
    ({"kind": "full_pan", "operation": "authorise"}, 1),
    ("offline", 1),
]
# The emulated chargers' faults (evpay.testbed.ocpp_charger.FAULTS), one drawn for an OCPP
# session at the fault rate and armed on its charger: it applies at its decision point.
CHARGER_FAULTS = [
    (ocpp_charger.WS_DROP, 4),
    (ocpp_charger.REPLAY_DUPLICATE, 2),
    (ocpp_charger.REPLAY_OUT_OF_ORDER, 1),
    (ocpp_charger.REBOOT_KEEP_TRANSACTION, 1),
    (ocpp_charger.REBOOT_LOSE_TRANSACTION, 1),
    (ocpp_charger.REMOTE_START_NO_ANSWER, 1),
    (ocpp_charger.REMOTE_START_REJECT, 1),
    (ocpp_charger.REMOTE_START_NO_TRANSACTION, 1),
    (ocpp_charger.METER_AFTER_STOP, 1),
    (ocpp_charger.METER_STOP_BELOW_START, 1),
    (ocpp_charger.STOP_UNKNOWN_TRANSACTION, 1),
]


@dataclass
class Options:
    api_url: str
    control_url: str
    keys: dict[str, str]  # site name -> raw API key
    speed: float = 1.0
    fault_rate: float = 0.1
    seed: int | None = None
    max_sessions: int = 0  # 0 = unlimited
    duration: float = 0  # seconds; 0 = until stopped
    # OCPP: the central system's URLs (a drop may reconnect to any), the chargers by id
    # ({"password", "version", "connectors"}), and (evse id, since epoch seconds) -> the
    # public id of the session the cable-in started there, or None.
    ocpp_urls: list[str] = field(default_factory=list)
    chargers: dict[str, dict] = field(default_factory=dict)
    find_session: Callable[[str, float], str | None] | None = None


@dataclass
class Connector:
    evse_id: str
    terminal_id: str
    site: str
    charger_id: str = ""  # an OCPP charger's connector: played over OCPP
    ocpp_connector: int = 0  # its number at the charger (1.6 connectorId, 2.0.1 EVSE)


@dataclass
class Stats:
    counts: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.counts[key] += n

    def snapshot(self) -> dict:
        with self.lock:
            return dict(self.counts)


class HttpError(Exception):
    def __init__(self, status: int, body):
        super().__init__(f"HTTP {status}: {body}")
        self.status, self.body = status, body


def http_json(method: str, url: str, body=None, headers=None, timeout: float = 30):
    """One JSON request over HTTP (http/https URLs only, else ValueError): returns (status,
    decoded body or None). A 4xx/5xx answer raises HttpError with the decoded (or raw text)
    body; a connection failure or timeout raises OSError."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an HTTP URL: {url}")
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json", **(headers or {})}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310 - checked above
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - loopback demo URLs
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = raw.decode(errors="replace")
        raise HttpError(exc.code, payload) from None


class Simulator:
    def __init__(self, options: Options, connectors: list[Connector]):
        self.options = options
        self.connectors = connectors
        self.stats = Stats()
        self.stop_event = threading.Event()
        self.random = random.Random(options.seed)
        self._started = 0
        self._lock = threading.Lock()
        # One driver at a time uses a terminal, as at a real IM30 serving two connectors.
        self._terminal_locks = {c.terminal_id: threading.Lock() for c in connectors}
        self._current: dict[str, str] = {}  # evse id -> session the charger is running
        self.fleet: ocpp_charger.ChargerFleet | None = None

    # ---------------------------------------------------------------- plumbing
    def _sleep(self, seconds: float) -> bool:
        """Sleep scaled by speed; True if the simulator was stopped meanwhile."""
        return self.stop_event.wait(seconds / self.options.speed)

    def _api(self, method, path, connector, body=None, idempotency_key=None):
        """A charger's call: server errors and dropped connections are retried a few times
        (with the same Idempotency-Key, so a repeat can never act twice)."""
        headers = {"Authorization": f"Bearer {self.options.keys[connector.site]}"}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        for attempt in range(4):
            try:
                return http_json(method, self.options.api_url.rstrip("/") + path, body, headers)
            except HttpError as exc:
                if exc.status < 500 or attempt == 3:
                    raise
                self.stats.add("api.retried_5xx")
            except OSError:
                if attempt == 3:
                    raise
                self.stats.add("api.retried_connection")
            self.stop_event.wait(0.5 * (attempt + 1))

    def _control(self, method, path, body=None):
        return http_json(method, self.options.control_url.rstrip("/") + path, body, timeout=10)

    def _open_request(self, connector) -> dict:
        try:
            _, state = self._control("GET", f"/terminals/{connector.terminal_id}/state")
        except Exception:  # offline or restarting: the driver looks again
            return {}
        return state.get("open_request") or {}

    def _tap_when_prompted(self, connector, card, request_type, timeout=45.0) -> None:
        """Tap when the terminal asks for a card with `request_type`, then stay until that
        request is over. Called holding the terminal's lock: a real reader only reads when it
        asks, so a tap must never be taken by another driver's request."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stop_event.is_set():
            asking = self._open_request(connector)
            if asking.get("request_type") == request_type:
                self._sleep(self.random.uniform(1, 5))  # reaching for the card
                try:
                    self._control(
                        "POST", f"/terminals/{connector.terminal_id}/present", {"card": card}
                    )
                except Exception as exc:  # the terminal went offline: the driver walks away
                    log.info("presenting %s at %s failed: %s", card, connector.terminal_id, exc)
                    return
                # The tapped request gets its own time to end: a prompt seen just before the
                # deadline must not have its card cleared before the terminal reads it.
                ends_by = time.monotonic() + 60
                while time.monotonic() < ends_by and not self.stop_event.is_set():
                    if self._open_request(connector).get("request_id") != asking["request_id"]:
                        break
                    self.stop_event.wait(0.05)
                # A tap that came as the request ended was never read; the emulator would keep
                # it for the next request, which a real reader does not.
                try:
                    self._control("DELETE", f"/terminals/{connector.terminal_id}/present")
                except Exception as exc:
                    log.info("clearing cards at %s failed: %s", connector.terminal_id, exc)
                return
            self.stop_event.wait(0.05)

    def _wait_state(self, connector, sid, done, timeout=150.0):
        deadline = time.monotonic() + timeout
        session = None
        while time.monotonic() < deadline and not self.stop_event.is_set():
            _, session = self._api("GET", f"/sessions/{sid}", connector)
            if done(session):
                return session
            self.stop_event.wait(0.25)
        return session

    def _take_slot(self) -> bool:
        """Reserve one of max_sessions before calling start, so concurrent connectors cannot
        overshoot the limit; a refused start hands its slot back."""
        with self._lock:
            if self.options.max_sessions and self._started >= self.options.max_sessions:
                return False
            self._started += 1
            return True

    def _give_back_slot(self) -> None:
        with self._lock:
            self._started -= 1

    # ---------------------------------------------------------------- faults
    def _maybe_fault(self, connector):
        if self.random.random() >= self.options.fault_rate:
            return
        fault = self.random.choices([f for f, _ in FAULTS], [w for _, w in FAULTS])[0]
        tid = connector.terminal_id
        try:
            if fault == "offline":
                self._control("POST", f"/terminals/{tid}/offline", {"offline": True})
                self.stats.add("fault.offline")
                threading.Timer(
                    20 / self.options.speed,
                    lambda: self._control("POST", f"/terminals/{tid}/offline", {"offline": False}),
                ).start()
            else:
                self._control("POST", f"/terminals/{tid}/faults", {**fault, "count": 1})
                self.stats.add(f"fault.{fault['kind']}.{fault['operation']}")
        except Exception as exc:
            log.info("could not set fault on %s: %s", tid, exc)

    # ---------------------------------------------------------------- one driver
    def _start_and_tap(self, connector: Connector, card: str) -> dict | None:
        """Start a session and tap when asked; the session once decided, None if refused."""
        key = str(uuid.uuid4())
        try:
            _, session = self._api(
                "POST", "/sessions", connector, {"evse_id": connector.evse_id}, key
            )
        except HttpError as exc:
            self._give_back_slot()
            self.stats.add(f"start.refused.{exc.status}")
            return None
        except Exception:
            self._give_back_slot()
            raise
        # One fault draw per session that really started: drawing on refused starts too would
        # pile faults up on a terminal while its connector waits.
        self._maybe_fault(connector)
        if self.random.random() < 0.1:  # a charger that retries its start call
            _, again = self._api(
                "POST", "/sessions", connector, {"evse_id": connector.evse_id}, key
            )
            self.stats.add("duplicate_api_call")
            assert again["id"] == session["id"], "idempotency key replay returned another session"
        sid = session["id"]
        self._current[connector.evse_id] = sid
        self.stats.add("sessions.started")
        self._tap_when_prompted(connector, card, "CardPreAuthorisation")
        return self._wait_state(connector, sid, lambda s: s["state"] != "authorising") or session

    def run_session(self, connector: Connector) -> str:
        rnd = self.random
        card = rnd.choices([c for c, _ in START_CARDS], [w for _, w in START_CARDS])[0]
        # One driver at the reader from the start call until the authorisation is decided, so
        # the card prompt this driver answers is the one for this session.
        with self._terminal_locks[connector.terminal_id]:
            session = self._start_and_tap(connector, card)
        if session is None:
            self.stop_event.wait(2)  # e.g. the previous session here is still being recovered
            return "refused"
        sid = session["id"]
        if session["state"] == "authorising":
            self.stats.add("sessions.authorisation_pending")
            return "pending"
        if session["state"] == "closed":
            self.stats.add(f"sessions.not_started.{session['close_reason']}")
            return session["close_reason"]
        self.stats.add("sessions.authorised")
        self._api("POST", f"/sessions/{sid}/charging-started", connector, {}, str(uuid.uuid4()))
        energy = 0
        for _ in range(rnd.randint(4, 14)):
            if self._sleep(1.0):
                break
            energy += rnd.randint(400, 1500)
            _, session = self._api(
                "POST", f"/sessions/{sid}/meter", connector, {"energy_wh": energy}
            )
            if session["action"] == "stop_charging":
                self.stats.add("sessions.cost_cap")
                break
        if session["action"] != "stop_charging":
            self._stop(connector, sid, card)
        session = self._wait_state(
            connector, sid, lambda s: s["state"] in ("stopping", "ended", "settling", "closed"), 120
        )
        self._api("POST", f"/sessions/{sid}/charging-ended", connector, {"energy_wh": energy})
        self._sleep(rnd.uniform(1, 4))
        self._api("POST", f"/sessions/{sid}/unplugged", connector, {})
        session = self._wait_state(connector, sid, lambda s: s["state"] == "closed", 180)
        outcome = (
            session["close_reason"] if session and session["state"] == "closed" else "settling"
        )
        self.stats.add(f"sessions.closed.{outcome}")
        return outcome

    def _stop(self, connector, sid, card):
        rnd = self.random
        how = rnd.random()
        if how < 0.3:
            self._api("POST", f"/sessions/{sid}/stop", connector, {"reason": "stop button"})
            self.stats.add("stop.button")
            return
        if how < 0.45:  # someone else's card first: must be refused
            wrong = "amex_ok" if card != "amex_ok" else "visa_ok"
            self._read_card(connector, wrong)
            self.stats.add("stop.wrong_card_presented")
        own = WALLET_OF.get(card, card) if rnd.random() < 0.3 else card
        self._read_card(connector, own)
        self.stats.add("stop.card" + (".wallet" if own != card else ""))
        session = self._wait_state(connector, sid, lambda s: s["state"] != "charging", 40)
        if session and session["state"] == "charging":  # the read got lost (busy terminal): button
            self._api("POST", f"/sessions/{sid}/stop", connector, {"reason": "card read failed"})
            self.stats.add("stop.fallback_button")

    def _read_card(self, connector, card) -> None:
        """The charger asks for a card read; the driver taps when the terminal asks."""
        with self._terminal_locks[connector.terminal_id]:
            self._api(
                "POST",
                f"/terminals/{connector.terminal_id}/card-read",
                connector,
                None,
                str(uuid.uuid4()),
            )
            self._tap_when_prompted(connector, card, "CardValidation", timeout=40)

    # ---------------------------------------------------------------- loop
    def _connector_loop(self, connector: Connector) -> None:
        rnd = random.Random(self.random.random())
        while not self.stop_event.is_set():
            if self._sleep(rnd.uniform(1, 6)):
                return
            if not self._take_slot():
                return
            try:
                if connector.charger_id:
                    self.run_ocpp_session(connector)
                else:
                    self.run_session(connector)
            except Exception as exc:
                self.stats.add("simulator.errors")
                log.warning("session on %s: %s", connector.evse_id, str(exc)[:300])
                self._finish_abandoned(connector)
            self._current.pop(connector.evse_id, None)

    def _finish_abandoned(self, connector: Connector) -> None:
        """A charger whose session went wrong mid-way still unplugs: end it so the connector
        is free again (the back-office settles whatever it cost)."""
        sid = self._current.get(connector.evse_id)
        if connector.charger_id and self.fleet is not None:
            try:  # the cable comes out at the charger; the central system settles
                self.fleet.do(connector.charger_id, "unplug", connector.ocpp_connector)
                self.stats.add("sessions.abandoned_and_unplugged")
            except Exception as exc:
                log.info("unplugging %s: %s", connector.evse_id, str(exc)[:200])
            return
        if not sid:
            return
        for _ in range(20):
            try:
                _, session = self._api("GET", f"/sessions/{sid}", connector)
                if session["state"] in ("closed", "settling"):
                    return
                if session["state"] != "authorising":
                    self._api("POST", f"/sessions/{sid}/unplugged", connector, {})
                    self.stats.add("sessions.abandoned_and_unplugged")
                    return
            except Exception as exc:
                log.info("finishing %s: %s", sid, str(exc)[:200])
            self._sleep(5)

    # ---------------------------------------------------------------- OCPP chargers
    def _start_fleet(self) -> None:
        """The emulated OCPP chargers of the connectors we play, on one background loop."""
        ids = {c.charger_id for c in self.connectors if c.charger_id}
        if not ids:
            return
        if not self.options.ocpp_urls or self.options.find_session is None:
            raise ValueError("OCPP connectors need Options.ocpp_urls and find_session")
        urls = self.options.ocpp_urls
        self.fleet = ocpp_charger.ChargerFleet()
        speed = self.options.speed
        for charger_id in sorted(ids):
            spec = self.options.chargers[charger_id]
            self.fleet.add(
                urls[0],
                charger_id,
                spec["password"],
                version=spec["version"],
                connectors=spec.get("connectors", 2),
                alternate_urls=urls[1:],
                # A meter value a simulated second (as the API chargers send), the energy of
                # a minute at 22 kW in each: sessions cost a few euros.
                meter_interval=max(0.25, 1.0 / speed),
                power_w=22_000,
                time_scale=60 * max(1.0, speed),
                reconnect_delay=max(0.2, 2.0 / speed),
                response_timeout=30,
                seed=self.options.seed or 0,
            )

    def _maybe_charger_fault(self, connector: Connector) -> None:
        if self.random.random() >= self.options.fault_rate:
            return
        fault = self.random.choices([f for f, _ in CHARGER_FAULTS], [w for _, w in CHARGER_FAULTS])
        options = {}
        if fault[0] == ocpp_charger.WS_DROP and len(self.options.ocpp_urls) > 1:
            # Back on another server process: the one it left must let go of the charger.
            current = self.fleet.chargers[connector.charger_id].url
            options["url"] = next(u for u in self.options.ocpp_urls if u != current)
        try:
            self.fleet.do(connector.charger_id, "arm", fault[0], **options)
            self.stats.add(f"ocpp.fault_armed.{fault[0]}")
        except Exception as exc:
            log.info("could not arm %s on %s: %s", fault[0], connector.charger_id, exc)

    def _charger(self, connector: Connector, method: str, *args, **kwargs):
        return self.fleet.do(connector.charger_id, method, *args, **kwargs)

    def _plug_in_and_tap(self, connector: Connector, card: str) -> dict | None:
        """Cable in; the central system starts a session and the terminal asks for the card;
        the driver taps. The session once decided, None if none started."""
        self._charger(connector, "wait_online", 60, timeout=70)  # a status sent offline is lost
        since = time.time() - 1
        self._maybe_charger_fault(connector)
        self._charger(connector, "plug_in", connector.ocpp_connector)
        sid = None
        deadline = time.monotonic() + 20
        while sid is None and time.monotonic() < deadline and not self.stop_event.is_set():
            sid = self.options.find_session(connector.evse_id, since)
            if sid is None:
                self.stop_event.wait(0.2)
        if sid is None:
            self._give_back_slot()
            self.stats.add("ocpp.start.no_session")
            self._charger(connector, "unplug", connector.ocpp_connector)
            return None
        self._maybe_fault(connector)
        self._current[connector.evse_id] = sid
        self.stats.add("sessions.started")
        self.stats.add("ocpp.sessions.started")
        self._tap_when_prompted(connector, card, "CardPreAuthorisation")
        return self._wait_state(connector, sid, lambda s: s["state"] != "authorising") or {
            "id": sid,
            "state": "authorising",
        }

    def run_ocpp_session(self, connector: Connector) -> str:
        """One driver at an OCPP charger: plug in, tap, charge, stop (card at the terminal, at
        the charger, or the central system's cost cap), unplug."""
        rnd = self.random
        card = rnd.choices([c for c, _ in START_CARDS], [w for _, w in START_CARDS])[0]
        with self._terminal_locks[connector.terminal_id]:
            session = self._plug_in_and_tap(connector, card)
        if session is None:
            self.stop_event.wait(2)
            return "refused"
        sid = session["id"]
        if session["state"] == "authorising":
            self.stats.add("sessions.authorisation_pending")
            return "pending"
        if session["state"] != "closed":
            self.stats.add("sessions.authorised")
            # RemoteStart -> StartTransaction: charging, or closed when the charger did not
            # take the start (rejected, unanswered, no transaction: released).
            session = self._wait_state(connector, sid, lambda s: s["state"] != "authorised", 150)
        if session["state"] == "charging":
            self.stats.add("ocpp.sessions.charging")
            for _ in range(rnd.randint(4, 14)):
                if self._sleep(1.0):
                    break
                _, session = self._api("GET", f"/sessions/{sid}", connector)
                if session["state"] != "charging":  # the cost cap: evpay stopped it
                    self.stats.add("ocpp.stop.by_central_system")
                    break
            if session["state"] == "charging":
                self._stop_ocpp(connector, sid, card)
            session = self._wait_state(
                connector, sid, lambda s: s["state"] in ("ended", "settling", "closed"), 30
            )
        elif session["state"] == "closed":
            self.stats.add(f"sessions.not_started.{session['close_reason']}")
        self._sleep(rnd.uniform(1, 4))
        self._charger(connector, "unplug", connector.ocpp_connector)
        session = self._wait_state(connector, sid, lambda s: s["state"] == "closed", 180)
        outcome = (
            session["close_reason"] if session and session["state"] == "closed" else "settling"
        )
        self.stats.add(f"sessions.closed.{outcome}")
        self.stats.add(f"ocpp.sessions.closed.{outcome}")
        return outcome

    def _stop_ocpp(self, connector: Connector, sid: str, card: str) -> None:
        rnd = self.random
        if rnd.random() < 0.3:
            self._charger(connector, "stop_local", connector.ocpp_connector)
            self.stats.add("ocpp.stop.at_charger")
            return
        # At the terminal: the card read is asked through the API (the charger's screen or
        # the terminal's own button would ask it); the match sends the remote stop.
        if rnd.random() < 0.2:
            wrong = "amex_ok" if card != "amex_ok" else "visa_ok"
            self._read_card(connector, wrong)
            self.stats.add("stop.wrong_card_presented")
        own = WALLET_OF.get(card, card) if rnd.random() < 0.3 else card
        self._read_card(connector, own)
        self.stats.add("ocpp.stop.card" + (".wallet" if own != card else ""))
        session = self._wait_state(connector, sid, lambda s: s["state"] != "charging", 40)
        if session and session["state"] == "charging":
            self._charger(connector, "stop_local", connector.ocpp_connector)
            self.stats.add("ocpp.stop.fallback_at_charger")

    def run(self) -> dict:
        self._start_fleet()
        try:
            self._run_threads()
        finally:
            if self.fleet is not None:
                faults = self.fleet.fault_counts()
                self.fleet.close()
                for name, count in faults.items():
                    self.stats.add(f"ocpp.fault.{name}", count)
        return self.stats.snapshot()

    def _run_threads(self) -> None:
        threads = [
            threading.Thread(
                target=self._connector_loop, args=(c,), daemon=True, name=f"sim-{c.evse_id}"
            )
            for c in self.connectors
        ]
        for t in threads:
            t.start()
        started = time.monotonic()
        last_report = started
        while any(t.is_alive() for t in threads):
            if self.options.duration and time.monotonic() - started > self.options.duration:
                self.stop_event.set()
            if time.monotonic() - last_report > 15:
                log.info("simulator: %s", json.dumps(self.stats.snapshot(), sort_keys=True))
                last_report = time.monotonic()
            time.sleep(0.5)
        log.info("simulator finished: %s", json.dumps(self.stats.snapshot(), sort_keys=True))
