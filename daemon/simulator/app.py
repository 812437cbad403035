"""The `Simulator`: every listener, the request pipeline, start and stop.

A request to either service goes through one ladder: log its arrival →
triggers (a test may hold it) → rate limiter → fault plan → latency →
the service's handler → late-answer triggers and faults (the answer, already
made, waits). Control calls under `/_sim/` skip the ladder: they
are not traffic of either service.
"""

from __future__ import annotations

import email.utils
import math
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from http import HTTPStatus

import anyio
from anyio.from_thread import start_blocking_portal

from daemon.simulator import control
from daemon.simulator.accurate import AccurateModel
from daemon.simulator.accurate_auth import REVOKED, TIMESTAMP_SKEW, AccurateAuth
from daemon.simulator.accurate_http import AccurateService, failure, redirect
from daemon.simulator.business import Business
from daemon.simulator.config import SimConfig
from daemon.simulator.faults import TOO_MANY_REQUESTS, FaultAction, FaultPlan
from daemon.simulator.forstok import (
    AUTH_PATH,
    QUANTITY_PATH,
    ForstokModel,
    ForstokService,
)
from daemon.simulator.limits import WindowLimiter, retry_after_seconds
from daemon.simulator.observe import HoldStage, LoggedRequest, RequestLog, Trigger
from daemon.simulator.server import (
    Behaviour,
    Handler,
    HttpListener,
    Request,
    Response,
    json_response,
)

ServiceHandler = Callable[[Request, list[FaultAction]], Response]

_HTML_ERROR = b"<html><head><title>502 Bad Gateway</title></head><body></body></html>"
_HOLD_POLL_S = 0.01
_BUSINESS_IDLE_S = 0.1


@dataclass(frozen=True)
class Snapshot:
    accurate: dict[tuple[str, str], Decimal]  # (item no, warehouse name)
    forstok: dict[tuple[str, int], int]  # (sku, warehouse id) -> on hand


class Simulator:
    """Simulated Accurate Online and Forstok on loopback ports."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self.lock = threading.RLock()
        self.accurate = AccurateModel(self.config, self.lock)
        catalogue = self.config.catalogue
        self.accurate.load_catalogue(catalogue.warehouses, catalogue.items)
        self.accurate_auth = AccurateAuth(self.accurate)
        self.forstok = ForstokModel(self.config, self.lock)
        self.requests = RequestLog()
        self.faults = FaultPlan()
        self.business = Business(self.accurate, self.forstok, self.config.seed)
        self._triggers: list[Trigger] = []
        self._accurate = AccurateService(
            self.accurate, self.accurate_auth, lambda: self.accurate_data_urls
        )
        self._forstok = ForstokService(self.forstok)
        self._accurate_limiter = WindowLimiter(
            1.0,
            lambda: self.config.accurate.rate_per_second,
            lambda: self.config.accurate.max_in_flight,
        )
        self._forstok_limiter = WindowLimiter(
            60.0,
            lambda: self.config.forstok.requests_per_minute,
            lambda: self.config.forstok.max_in_flight,
        )
        self._account = HttpListener("accurate-account", self._on_account, self._date)
        self._data = [
            HttpListener(f"accurate-data-{n + 1}", self._on_data(n), self._date)
            for n in range(self.config.accurate.data_hosts)
        ]
        self._forstok_listener = HttpListener(
            "forstok", self._on_forstok, self._real_date
        )
        self._stack: ExitStack | None = None

    # ------------------------------------------------------------------ URLs
    @property
    def accurate_account_url(self) -> str:
        return self._account.url

    @property
    def accurate_data_urls(self) -> list[str]:
        return [listener.url for listener in self._data]

    @property
    def forstok_auth_url(self) -> str:
        return self._forstok_listener.url + AUTH_PATH

    @property
    def forstok_quantity_url(self) -> str:
        return self._forstok_listener.url + QUANTITY_PATH

    @property
    def control_url(self) -> str:
        return self._account.url + "/_sim"

    @property
    def listeners(self) -> dict[str, HttpListener]:
        """Every listener by name, for connection counts."""
        every = [self._account, *self._data, self._forstok_listener]
        return {listener.name: listener for listener in every}

    def urls(self) -> dict[str, object]:
        return {
            "accurate_account_url": self.accurate_account_url,
            "accurate_data_urls": self.accurate_data_urls,
            "forstok_auth_url": self.forstok_auth_url,
            "forstok_quantity_url": self.forstok_quantity_url,
            "control_url": self.control_url,
        }

    # ------------------------------------------------------------ lifecycle
    @asynccontextmanager
    async def running(self) -> AsyncIterator[Simulator]:
        """Serve in the current event loop until the block exits."""
        listeners = [self._account, *self._data, self._forstok_listener]
        for listener in listeners:
            await listener.open()
        async with anyio.create_task_group() as group:
            for listener in listeners:
                group.start_soon(listener.serve, name=f"sim-{listener.name}")
            group.start_soon(self._business_loop, name="sim-business")
            try:
                yield self
            finally:
                group.cancel_scope.cancel()

    def start_in_thread(self) -> Simulator:
        """Serve from a thread with its own event loop; `stop()` ends it."""
        if self._stack is not None:
            raise RuntimeError("simulator already started")
        stack = ExitStack()
        portal = stack.enter_context(start_blocking_portal(name="stocksync-sim"))
        try:
            stack.enter_context(portal.wrap_async_context_manager(self.running()))
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        return self

    def stop(self) -> None:
        if self._stack is not None:
            stack, self._stack = self._stack, None
            stack.close()

    async def _business_loop(self) -> None:
        """Merchant activity at `business_steps_per_minute`, read before each
        step so a test may start, change or pause it (0) while serving."""
        while True:
            rate = self.config.business_steps_per_minute
            if rate <= 0:
                await anyio.sleep(_BUSINESS_IDLE_S)
                continue
            await anyio.sleep(60.0 / rate)
            if self.config.business_steps_per_minute > 0:
                self.business.step()

    # ---------------------------------------------------------- observation
    def snapshot(self) -> Snapshot:
        return Snapshot(self.accurate.stock_snapshot(), self.forstok.on_hand_snapshot())

    def when_request(
        self,
        service: str,
        endpoint: str,
        nth: int = 1,
        *,
        hold: bool = True,
        method: str | None = None,
        params: Mapping[str, str] | None = None,
        stage: HoldStage = "arrival",
    ) -> Trigger:
        """A trigger fired by the `nth` arrival matching `endpoint` (a glob)
        and `params`; see `Trigger` for where `stage` holds it."""
        trigger = Trigger(
            service, endpoint, nth, hold=hold, method=method, params=params, stage=stage
        )
        with self.lock:
            self._triggers.append(trigger)
        return trigger

    def install_faults(self, plan: FaultPlan) -> None:
        self.faults = plan

    # -------------------------------------------------------------- routing
    def _date(self) -> str:
        return email.utils.formatdate(self.accurate_auth.server_time(), usegmt=True)

    @staticmethod
    def _real_date() -> str:
        return email.utils.formatdate(time.time(), usegmt=True)

    async def _on_account(self, request: Request) -> Response:
        if request.path.startswith("/_sim/"):
            return control.handle(self, request)
        return await self._serve("accurate", request, self._account_handler)

    def _account_handler(self, request: Request, _: list[FaultAction]) -> Response:
        return self._accurate.account(request)

    def _on_data(self, index: int) -> Handler:
        def handler(request: Request, _: list[FaultAction]) -> Response:
            return self._accurate.data(request, index)

        async def on_request(request: Request) -> Response:
            return await self._serve("accurate", request, handler)

        return on_request

    async def _on_forstok(self, request: Request) -> Response:
        return await self._serve("forstok", request, self._forstok_handler)

    def _forstok_handler(
        self, request: Request, actions: list[FaultAction]
    ) -> Response:
        rejected = {
            a.sku: a.message for a in actions if a.kind == "reject_sku" and a.sku
        }
        return self._forstok.handle(request, rejected)

    # ------------------------------------------------------------- pipeline
    async def _serve(
        self, service: str, request: Request, handler: ServiceHandler
    ) -> Response:
        entry = self.requests.begin(
            service, request.path, request.method, request.listener, request.body
        )
        try:
            late = await self._hold_for_triggers(service, request)
        except BaseException:
            self.requests.end(entry, None)
            raise
        limiter = self._limiter(service, request)
        wait = limiter.try_acquire() if limiter else None
        if wait is not None:
            entry.limited = True
            response = self._rate_limited(service, wait)
            response.on_done.append(lambda status: self.requests.end(entry, status))
        else:
            response = await self._accepted(service, request, handler, entry, limiter)
        return await _answer_late(response, late)

    async def _accepted(
        self,
        service: str,
        request: Request,
        handler: ServiceHandler,
        entry: LoggedRequest,
        limiter: WindowLimiter | None,
    ) -> Response:
        def finish(status: int | None) -> None:
            if limiter is not None:
                limiter.release()
            self.requests.end(entry, status)

        try:
            params = request.params() if self.faults.rules else {}
            actions = self.faults.select(service, request.path, request.method, params)
            entry.fault = ",".join(a.kind for a in actions) or None
            await anyio.sleep(self._delay(service, actions))
            response = self._fault_response(service, request, actions)
            if response is None:
                response = handler(request, actions)
                if any(a.kind == "truncate" for a in actions):
                    response.behaviour = Behaviour.TRUNCATE
            # Made now, sent later: it shows the state at arrival.
            await anyio.sleep(
                sum(a.seconds for a in actions if a.kind == "late_answer")
            )
        except BaseException:
            finish(None)
            raise
        response.on_done.append(finish)
        return response

    async def _hold_for_triggers(self, service: str, request: Request) -> list[Trigger]:
        """Count this request for every trigger, fire and wait out those
        that hold it on arrival; the ones that hold its answer are returned."""
        # Parsed only when needed: a benchmark sends many requests, no triggers.
        params = request.params() if self._triggers else {}
        with self.lock:
            fired = []
            for trigger in self._triggers:
                if trigger.matches(service, request.path, request.method, params):
                    trigger.seen += 1
                    if trigger.seen == trigger.nth:
                        fired.append(trigger)
        for trigger in fired:
            if trigger.stage == "arrival":
                trigger.fire()
                await _held(trigger)
        return [t for t in fired if t.stage == "answer"]

    def _limiter(self, service: str, request: Request) -> WindowLimiter | None:
        if service == "accurate":
            return self._accurate_limiter
        if (
            request.path == AUTH_PATH
            and not self.config.forstok.auth_counts_toward_limit
        ):
            return None
        return self._forstok_limiter

    def _delay(self, service: str, actions: list[FaultAction]) -> float:
        settings = (
            self.config.accurate if service == "accurate" else self.config.forstok
        )
        return settings.latency_s + sum(a.seconds for a in actions if a.kind == "delay")

    def _rate_limited(self, service: str, wait_s: float) -> Response:
        if service == "forstok":
            settings = self.config.forstok
            seconds = retry_after_seconds(wait_s, settings.retry_after_s)
            body = {"status": "ERROR", "message": "Too many requests"}
            headers = [self._retry_after(seconds, settings.retry_after_form)]
            return json_response(body, status=429, headers=headers)
        accurate = self.config.accurate
        seconds = retry_after_seconds(wait_s, accurate.retry_after_s)
        if accurate.rate_limit_status == 200:
            return failure(TOO_MANY_REQUESTS)
        headers = [self._retry_after(seconds, accurate.retry_after_form)]
        return json_response(
            {"s": False, "d": [TOO_MANY_REQUESTS]},
            status=accurate.rate_limit_status,
            headers=headers,
        )

    def _retry_after(self, seconds: int, form: str) -> tuple[str, str]:
        if form == "http-date":
            # Rounded up: an HTTP-date has whole seconds, and a date rounded
            # down would invite the client back before `seconds` are over.
            moment = math.ceil(self.accurate_auth.server_time()) + seconds
            return ("Retry-After", email.utils.formatdate(moment, usegmt=True))
        return ("Retry-After", str(seconds))

    # --------------------------------------------------------------- faults
    def _fault_response(
        self, service: str, request: Request, actions: list[FaultAction]
    ) -> Response | None:
        """The first action that replaces the answer, if any."""
        for action in actions:
            if action.kind in ("delay", "late_answer", "truncate", "reject_sku"):
                continue
            return self._canned(service, request, action)
        return None

    def _canned(self, service: str, request: Request, action: FaultAction) -> Response:
        auth = self.accurate_auth
        simple: dict[str, Callable[[], Response]] = {
            "reset": lambda: Response(behaviour=Behaviour.RESET),
            "hang": lambda: Response(behaviour=Behaviour.HANG),
            "accurate_error": lambda: failure(action.text, action.status or 200),
            "revoked_token": lambda: auth.api_token_error(REVOKED),
            "timestamp_skew": lambda: auth.api_token_error(TIMESTAMP_SKEW),
            "session_expired": auth.session_error,
            "oauth_token_expired": auth.token_error,
            "forstok_token_expired": lambda: json_response(
                {"status": "ERROR", "message": "token expired"}, status=401
            ),
            "redirect_other_host": lambda: self._other_host(request),
            "non_json": lambda: Response(
                status=action.status or 200,
                body=action.body.encode() if action.body else _HTML_ERROR,
                content_type="text/html",
            ),
        }
        if action.kind in simple:
            return simple[action.kind]()
        return self._status(service, action)

    def _status(self, service: str, action: FaultAction) -> Response:
        status = action.status or 500
        headers = []
        if action.retry_after is not None:
            headers.append(
                self._retry_after(action.retry_after, action.retry_after_form)
            )
        if action.body is not None:
            return Response(status=status, body=action.body.encode(), headers=headers)
        text = TOO_MANY_REQUESTS if status == 429 else _phrase(status)
        if service == "forstok":
            body: dict[str, object] = {"status": "ERROR", "message": text}
        else:
            body = {"s": False, "d": [text]}
        return json_response(body, status=status, headers=headers)

    def _other_host(self, request: Request) -> Response:
        """The database moves to the next data host, which then serves it;
        the host asked answers 308 now and on every later request."""
        names = [listener.name for listener in self._data]
        with self.lock:
            if request.listener in names:
                here = names.index(request.listener)
                self.accurate.current_host = (here + 1) % len(self._data)
            target = self._data[self.accurate.current_host]
        return redirect(request, target.url)


async def _held(trigger: Trigger) -> None:
    # Polled because release() may come from any thread or loop.
    while trigger.hold and not trigger.released:  # noqa: ASYNC110
        await anyio.sleep(_HOLD_POLL_S)


async def _answer_late(response: Response, triggers: list[Trigger]) -> Response:
    """The answer, once every trigger holding it is released. These fire
    only now, so a test that sees one fired knows what the answer says."""
    try:
        for trigger in triggers:
            trigger.fire()
            await _held(trigger)
    except BaseException:
        for done in response.on_done:
            done(None)  # never sent: the limiter slot and the log entry end
        raise
    return response


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
