"""The TTP's host-facing API over oslo.messaging RPC (``trusted-launch-ttp-rpc``).

A second, thin transport beside HTTPS: each RPC method calls the same service
object as its /v1 route (launch attestation, host enrollment and activation,
continuous host attestation), parses the body with the same limits and maps
every failure with the same :func:`~trusted_launch.ttp.api.error_answer`.
The answer is ``{"status": <the HTTP status>, "body": <the /v1 JSON body>}``;
the endpoint never raises, so a refusal reaches the host as its named check.

Bodies travel as JSON text, so the size and nesting limits apply to the bytes
the host sent, before they are decoded. Every call names the TTP it is for
(``ttp_url``); a call for another TTP is refused. The bus needs no trust (see
doc/ttp-transports.md): the token is sealed to this TTP, the release to the
host's bind key, and the replay table is the database both transports share.
"""

from __future__ import annotations

import signal
import socket
import threading
from collections.abc import Callable

import oslo_messaging
from oslo_config import cfg
from oslo_log import log as logging

from trusted_launch.ttp.api import Limits, TTPApplication, error_answer, parse_json
from trusted_launch.ttp.errors import BadRequest, NotFound, PayloadTooLarge
from trusted_launch.ttp.host_status import HostStatusService

LOG = logging.getLogger(__name__)
#: RPC exchange, namespace and version of this API; the compute side's client names the
#: same. The exchange is fixed, not [DEFAULT] control_exchange, which Nova sets to "nova".
EXCHANGE = "trusted_launch"
NAMESPACE = "trusted_launch_ttp"
VERSION = "1.0"

Answer = tuple[int, dict]


class TTPRPCEndpoint:
    """RPC methods of the TTP, one per host-facing /v1 route."""

    target = oslo_messaging.Target(namespace=NAMESPACE, version=VERSION)

    def __init__(self, app: TTPApplication, ttp_url: str, topic: str) -> None:
        self._app = app
        self._ttp_url = ttp_url.rstrip("/")
        self._requester = f"rpc:{topic}"[:255]

    # methods (each mirrors one /v1 route) ------------------------------------

    def attest(self, ctxt: dict, ttp_url: object, body: object) -> dict:
        """POST /v1/attestations."""
        return self._answer("attest", ttp_url, lambda: self._app.attestations.attest(
            self._parse(body), self._requester))

    def enroll(self, ctxt: dict, ttp_url: object, body: object) -> dict:
        """POST /v1/hosts."""
        return self._answer("enroll", ttp_url, lambda: (
            201, self._app.enrollment.enroll(self._object(body)).to_json()))

    def activate(self, ctxt: dict, ttp_url: object, host: object, body: object) -> dict:
        """POST /v1/hosts/{host}/activation."""
        return self._answer("activate", ttp_url, lambda: (
            200, {"ak_certificate": self._app.enrollment.activate(
                host, self._object(body), self._requester)}))

    def host_challenge(self, ctxt: dict, ttp_url: object, host: object) -> dict:
        """POST /v1/hosts/{host}/challenges."""
        return self._answer("host_challenge", ttp_url, lambda: (
            201, self._host_status().challenge(host)))

    def host_attestation(self, ctxt: dict, ttp_url: object, host: object,
                         body: object) -> dict:
        """POST /v1/hosts/{host}/attestations."""
        return self._answer("host_attestation", ttp_url, lambda: (
            200, self._host_status().attest(host, self._parse(body))))

    # shared ------------------------------------------------------------------

    def _answer(self, operation: str, ttp_url: object, handle: Callable[[], Answer]) -> dict:
        try:
            self._check_ttp_url(ttp_url)
            status, body = handle()
        except Exception as exc:  # every failure becomes an answer, as over HTTPS
            status, body = error_answer(exc, f"RPC {operation}")
        return {"status": status, "body": body}

    def _check_ttp_url(self, ttp_url: object) -> None:
        if not isinstance(ttp_url, str):
            raise BadRequest("ttp_url", "must name the TTP the request is for")
        if ttp_url.rstrip("/") != self._ttp_url:
            raise BadRequest("ttp_url", f"this TTP is {self._ttp_url}, not "
                                        f"{ttp_url[:200]!r}; the request is for another TTP")

    @property
    def _limits(self) -> Limits:
        return self._app.limits

    def _parse(self, body: object) -> object:
        """JSON text -> value, under the HTTPS API's size and nesting limits."""
        if not isinstance(body, str):
            raise BadRequest("body", "must be JSON text")
        try:
            data = body.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise BadRequest("body", f"not UTF-8 at character {exc.start}") from None
        if len(data) > self._limits.max_body:
            raise PayloadTooLarge("body", f"larger than {self._limits.max_body} bytes")
        return parse_json(data, self._limits)

    def _object(self, body: object) -> dict:
        value = self._parse(body)
        if not isinstance(value, dict):
            raise BadRequest("body", "must be a JSON object")
        return value

    def _host_status(self) -> HostStatusService:
        if self._app.host_status is None:
            raise NotFound("host_status", "this TTP does not attest hosts continuously")
        return self._app.host_status


def check_config(conf: cfg.ConfigOpts) -> None:
    """ValueError unless ``[rpc]`` says which TTP this is."""
    if not conf.rpc.ttp_url:
        raise ValueError("[rpc] ttp_url is required: the https:// URL that names this TTP")


def make_server(conf: cfg.ConfigOpts, app: TTPApplication,
                transport: oslo_messaging.Transport) -> oslo_messaging.rpc.RPCServer:
    """An RPC server for ``app`` on ``[rpc] topic`` (threads: the process is not green)."""
    check_config(conf)
    target = oslo_messaging.Target(exchange=EXCHANGE, topic=conf.rpc.topic,
                                   server=conf.rpc.server_name or socket.gethostname())
    endpoint = TTPRPCEndpoint(app, conf.rpc.ttp_url, conf.rpc.topic)
    return oslo_messaging.get_rpc_server(
        transport, target, [endpoint],
        access_policy=oslo_messaging.DefaultRPCAccessPolicy)


def run(conf: cfg.ConfigOpts, make_app: Callable[[], TTPApplication]) -> None:
    """Serve ``[rpc] topic`` until SIGTERM or SIGINT.

    ``conf`` must be the global ``cfg.CONF``: oslo.messaging 18.3 registers its
    tracing, metrics and dispatcher options there only, yet reads them from the
    transport's configuration.
    """
    check_config(conf)  # before touching the bus or the database
    app = make_app()
    transport = oslo_messaging.get_rpc_transport(conf)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    server = make_server(conf, app, transport)
    try:
        server.start()
        LOG.info("TTP %s serving RPC topic %s", conf.rpc.ttp_url, conf.rpc.topic)
        stop.wait()
        LOG.info("TTP RPC server stopping")
        server.stop()
        server.wait()
    finally:
        transport.cleanup()
