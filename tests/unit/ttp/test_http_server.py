"""The TTP server's pure parts: connection slots, WSGI environ and call, metric labels."""

from __future__ import annotations

import h11
import pytest

from trusted_launch.ttp import metrics
from trusted_launch.ttp.errors import BadRequest, Refused
from trusted_launch.ttp.http_server import (
    AddressSlots,
    call_wsgi,
    error_response,
    request_environ,
)


def test_slots_cap_each_address_and_the_total() -> None:
    slots = AddressSlots(per_address=2, total=3)
    assert slots.take("10.0.0.1") is None and slots.take("10.0.0.1") is None
    assert slots.take("10.0.0.1") == "per_address"
    assert slots.take("10.0.0.2") is None
    assert slots.take("10.0.0.3") == "total"
    slots.give_back("10.0.0.1")
    assert slots.take("10.0.0.3") is None
    for address in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        slots.give_back(address)
    assert slots.count == 0 and slots.open == {}


def _request(target: bytes, headers: list[tuple[bytes, bytes]]) -> h11.Request:
    return h11.Request(method=b"POST", target=target,
                       headers=[(b"Host", b"ttp.example"), *headers])


def test_environ_decodes_the_path_and_keeps_the_query() -> None:
    environ = request_environ(_request(b"/v1/hosts/a%2Fb%C3%A9?status=1&x=%20", []), b"{}")
    assert environ["PATH_INFO"] == "/v1/hosts/a/b\xc3\xa9"  # PEP 3333: bytes as latin-1
    assert environ["QUERY_STRING"] == "status=1&x=%20"
    assert environ["REQUEST_METHOD"] == "POST" and environ["wsgi.url_scheme"] == "https"
    assert environ["CONTENT_LENGTH"] == "2" and environ["wsgi.input"].read() == b"{}"


def test_environ_drops_underscore_headers_that_would_alias_dash_ones() -> None:
    environ = request_environ(_request(b"/", [(b"X_Auth_Token", b"forged"),
                                              (b"X-Auth-Token", b"genuine"),
                                              (b"Content-Type", b"application/json")]), b"")
    assert environ["HTTP_X_AUTH_TOKEN"] == "genuine"
    assert environ["CONTENT_TYPE"] == "application/json"
    assert "HTTP_CONTENT_TYPE" not in environ


def test_environ_joins_repeated_headers() -> None:
    environ = request_environ(_request(b"/", [(b"Accept", b"a"), (b"Accept", b"b")]), b"")
    assert environ["HTTP_ACCEPT"] == "a,b"


def test_call_wsgi_collects_the_answer_and_closes_the_iterable() -> None:
    closed = []

    class Body(list):
        def close(self) -> None:
            closed.append(True)

    def app(environ, start_response):
        start_response("201 Created", [("Content-Type", "text/plain"),
                                       ("Content-Length", "999")])
        return Body([b"ab", b"c"])

    response = call_wsgi(app, {})
    assert (response.status, response.reason, response.body) == (201, b"Created", b"abc")
    assert (b"Content-Length", b"3") in response.headers  # the app's wrong length is replaced
    assert (b"Content-Length", b"999") not in response.headers
    assert closed == [True]


def test_error_response_is_the_ttp_error_shape_and_closes() -> None:
    encoded = error_response(BadRequest("request", "malformed HTTP/1.1")).encode()
    head, body = encoded.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"Connection: close" in head
    assert body == b'{"error":{"code":"bad_request","check":"request",' \
                   b'"reason":"malformed HTTP/1.1"}}'


@pytest.mark.parametrize(("check", "label"), [
    ("token_replayed", "token_replayed"), ("Bad Field!", "other"), ("x" * 49, "other"),
    (None, "other")])
def test_check_labels_are_bounded(check, label) -> None:
    assert metrics.check_label(check) == label


def test_observe_attestation_counts_refusals_by_check() -> None:
    def counted(verdict: str, check: str) -> float:
        return metrics.ATTESTATIONS.labels("launch", verdict, check)._value.get()

    before = counted("refused", "nonce_unknown"), counted("invalid", "bad_request")
    with pytest.raises(Refused):
        metrics.observe_attestation("launch", _raise(Refused("nonce_unknown", "no")),
                                    metrics.launch_outcome)
    with pytest.raises(BadRequest):
        metrics.observe_attestation("launch", _raise(BadRequest("Chosen_By_Client", "no")),
                                    metrics.launch_outcome)
    assert counted("refused", "nonce_unknown") == before[0] + 1
    assert counted("invalid", "bad_request") == before[1] + 1  # the code, not the client's name


def _raise(error: Exception):
    def run():
        raise error
    return run
