"""The TTP's host-facing API over oslo.messaging RPC (``ttp_transport = rpc``).

Each request is an RPC call on the TTP's topic that names the TTP it is for
(the allowed URL) and carries the /v1 JSON body as text; the answer is
``{"status", "body"}`` with the /v1 status and body, mapped to the same
refusals as over HTTPS. A bus that loses or delays a call makes the TTP
unreachable; one that alters it gets a named refusal from the TTP or the TPM
(doc/ttp-transports.md).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from typing import Any

import oslo_messaging

from trusted_launch.compute.errors import TTPProtocolError, TTPUnreachable
from trusted_launch.compute.ttp_client import BaseTTPClient, answer_or_refuse

#: The RPC exchange, namespace and version the TTP's endpoint serves (trusted_launch.ttp.rpc);
#: the exchange is fixed, whatever [DEFAULT] control_exchange the host's service has.
EXCHANGE = "trusted_launch"
NAMESPACE = "trusted_launch_ttp"
VERSION = "1.0"
#: Seconds past the call's own timeout before the caller gives up on a stuck call.
DEADLINE_GRACE_S = 1.0


class RPCTTPClient(BaseTTPClient):
    """Calls the TTP named ``base_url`` on ``topic`` over ``transport``."""

    def __init__(self, base_url: str, transport: oslo_messaging.Transport, *, topic: str,
                 timeout: float = 10.0, retries: int = 2) -> None:
        super().__init__(base_url)
        self.topic = topic
        self._timeout = timeout
        target = oslo_messaging.Target(exchange=EXCHANGE, topic=topic, namespace=NAMESPACE,
                                       version=VERSION)
        self._client = oslo_messaging.get_rpc_client(transport, target, timeout=timeout,
                                                     retry=retries)

    def _call(self, operation: str, *, host: str | None = None,
              body: Mapping[str, Any] | None = None) -> dict:
        arguments: dict[str, Any] = {"ttp_url": self.base_url}
        if host is not None:
            arguments["host"] = host
        if body is not None:
            arguments["body"] = json.dumps(dict(body), separators=(",", ":"))
        try:
            envelope = call_with_deadline(
                lambda: self._client.call({}, operation, **arguments),
                self._timeout + DEADLINE_GRACE_S)
        except TimeoutError:
            raise TTPUnreachable(f"no answer on RPC topic {self.topic!r} within "
                                 f"{self._timeout:g} s: the message bus is unreachable") from None
        except oslo_messaging.MessagingTimeout:
            raise TTPUnreachable(f"no TTP answered on RPC topic {self.topic!r} within "
                                 f"{self._timeout:g} s") from None
        except oslo_messaging.RemoteError as exc:
            raise TTPProtocolError(f"the TTP's RPC server failed {operation}: "
                                   f"{exc.exc_type}") from None
        except oslo_messaging.MessagingException as exc:
            raise TTPUnreachable(f"message bus failed for RPC topic {self.topic!r}: "
                                 f"{type(exc).__name__}") from None
        status, answer = _unwrap(envelope)
        return answer_or_refuse(self.base_url, status, answer, None)


def call_with_deadline(call: Callable[[], object], deadline: float) -> object:
    """``call()``'s result or exception; TimeoutError if it takes over ``deadline`` seconds.

    oslo.messaging (18.3) connects the reply queue of a client's first call with
    unbounded retries, whatever ``retry`` says, so with the bus down that call
    never returns. It runs in a daemon thread that is left behind on timeout
    (it finishes, its answer unused, once the bus is back).
    """
    outcome: dict[str, object] = {}
    done = threading.Event()

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # handed to the caller below
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, daemon=True, name="trusted-launch-ttp-rpc-call").start()
    if not done.wait(deadline):
        raise TimeoutError(f"no result within {deadline:g} s")
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]


def _unwrap(envelope: object) -> tuple[int, object]:
    """(status, body) of an RPC answer, else TTPProtocolError."""
    status = envelope.get("status") if isinstance(envelope, dict) else None
    if not isinstance(status, int) or isinstance(status, bool) or "body" not in envelope:
        raise TTPProtocolError("the TTP's RPC answer is not a {status, body} object")
    return status, envelope["body"]
