"""The RPC client of the TTP: answers mapped exactly as over HTTPS, bad answers refused."""

from __future__ import annotations

import threading

import oslo_messaging
import pytest
from oslo_config import cfg

from trusted_launch.compute.errors import AttestationRefused, TTPProtocolError, TTPUnreachable
from trusted_launch.compute.ttp_client import TTPClient, make_ttp_client
from trusted_launch.compute.ttp_rpc_client import RPCTTPClient, call_with_deadline
from trusted_launch.conf import compute as compute_conf

URL = "https://ttp.example.org:9443"


class _Answering(RPCTTPClient):
    """An RPCTTPClient whose transport is oslo.messaging's in-process fake driver."""

    def __init__(self, answer: object) -> None:
        super().__init__(URL, oslo_messaging.get_rpc_transport(cfg.CONF, url="fake:/"),
                         topic="t", timeout=1, retries=0)
        self._client.call = lambda ctxt, method, **kwargs: answer


def test_success_answer_is_the_body() -> None:
    assert _Answering({"status": 200, "body": {"verdict": "trusted"}}).attest({}) == {
        "verdict": "trusted"}


def test_refusal_answer_names_the_ttps_check() -> None:
    answer = {"status": 403, "body": {"error": {"code": "attestation_refused",
                                                "check": "profile_policy", "reason": "PCR 7"}}}
    with pytest.raises(AttestationRefused) as refused:
        _Answering(answer).attest({})
    assert (refused.value.check, refused.value.reason) == ("profile_policy", "PCR 7")


def test_server_failure_is_unreachable() -> None:
    answer = {"status": 503, "body": {"error": {"check": "service", "reason": "db down"}}}
    with pytest.raises(TTPUnreachable, match="HTTP 503: db down"):
        _Answering(answer).host_challenge("cmp1")


@pytest.mark.parametrize("answer", [None, [], {"body": {}}, {"status": "200", "body": {}},
                                    {"status": True, "body": {}}, {"status": 200},
                                    {"status": 200, "body": []}])
def test_malformed_answer_is_a_protocol_error(answer) -> None:
    with pytest.raises(TTPProtocolError):
        _Answering(answer).attest({})


def test_transport_option_selects_the_client() -> None:
    conf = cfg.ConfigOpts()
    compute_conf.register_opts(conf)
    conf([])
    transports = []

    def transport():
        transports.append(oslo_messaging.get_rpc_transport(cfg.CONF, url="fake:/"))
        return transports[-1]

    assert type(make_ttp_client(conf.trusted_launch, URL, transport)) is TTPClient
    assert transports == []
    conf.set_override("ttp_transport", "rpc", group="trusted_launch")
    client = make_ttp_client(conf.trusted_launch, URL, transport)
    assert isinstance(client, RPCTTPClient) and client.topic == "trusted_launch_ttp"
    assert client.base_url == URL and len(transports) == 1


def test_deadline_passes_results_and_exceptions_through() -> None:
    assert call_with_deadline(lambda: {"status": 200}, 5) == {"status": 200}
    with pytest.raises(oslo_messaging.MessagingTimeout):
        call_with_deadline(_raise(oslo_messaging.MessagingTimeout("late")), 5)


def test_a_call_that_never_returns_times_out() -> None:
    never = threading.Event()
    with pytest.raises(TimeoutError):
        call_with_deadline(lambda: never.wait(30), 0.2)
    never.set()


def test_stuck_call_is_unreachable_not_a_hang() -> None:
    client = _Answering(None)
    never = threading.Event()
    client._client.call = lambda ctxt, method, **kwargs: never.wait(30)
    client._timeout = 0.1
    with pytest.raises(TTPUnreachable, match="message bus is unreachable"):
        client.host_challenge("cmp1")
    never.set()


def _raise(exc: Exception):
    def call():
        raise exc
    return call
