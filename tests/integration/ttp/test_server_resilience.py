"""One client cannot stall the TTP: silent, slow and many connections against the real server.

The real ``trusted-launch-ttp`` (one worker, two application threads, short
deadlines) is attacked from one loopback address while an honest client
connects from another. Each test shows the honest client answered while the
attackers are still connected (before their deadline), then that the server
itself closes the attackers when their deadline passes, with the named check,
and counts them in /metrics. Linux routes all of 127.0.0.0/8 to loopback, so
the source addresses are distinct clients to the server.
"""

from __future__ import annotations

import http.client
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.ttp import CertificateAuthority, TTPServer
from trusted_launch.sandbox.ttp_process import start_ttp

DEADLINE = 4.0  # seconds: TLS handshake, request head, request body
PER_ADDRESS = 6  # more than the application threads (2): slow clients must hold none
HONEST = "127.0.0.2"
PATIENCE = DEADLINE + 20  # how long a test waits for the server to act before failing


@pytest.fixture(scope="module")
def ttp(tmp_path_factory: pytest.TempPathFactory,
        ttp_test_ca: CertificateAuthority) -> Iterator[TTPServer]:
    directory = tmp_path_factory.mktemp("ttp-resilience")
    options = {"threads": 2, "tls_handshake_timeout": DEADLINE, "header_timeout": DEADLINE,
               "body_timeout": DEADLINE, "max_connections_per_address": PER_ADDRESS}
    with start_ttp(directory, tls_ca=ttp_test_ca, ek_ca_files=[ttp_test_ca.cert_file],
                   workers=1, api_options=options) as server:
        yield server


def _context(ttp: TTPServer) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ttp.ca_file))


def _honest_get(ttp: TTPServer, path: str = "/v1/keys") -> tuple[int, bytes]:
    """GET ``path`` from the honest address (as the operator: /metrics needs the reader role)."""
    connection = http.client.HTTPSConnection("127.0.0.1", ttp.port, context=_context(ttp),
                                             timeout=PATIENCE, source_address=(HONEST, 0))
    try:
        connection.request("GET", path, headers={"X-Auth-Token": ttp.admin_token})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _metric(ttp: TTPServer, name: str, **labels: str) -> float:
    _, text = _honest_get(ttp, "/metrics")
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v
                                           for k, v in labels.items()):
                return sample.value
    return 0.0


def _tcp(ttp: TTPServer, source: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", ttp.port), timeout=PATIENCE,
                                    source_address=(source, 0))
    return sock


def _tls(ttp: TTPServer, source: str) -> ssl.SSLSocket:
    """A TLS connection, done with its handshake. TLS 1.2: TLS 1.3 session tickets would
    arrive after the handshake and look like an answer from the server."""
    context = _context(ttp)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    return context.wrap_socket(_tcp(ttp, source), server_hostname="127.0.0.1")


def _answered_by_server(sock: socket.socket) -> bool:
    """True once the server sent something or closed (the socket is readable)."""
    return bool(select.select([sock], [], [], 0)[0])


def _while_trickling(attackers: list[socket.socket], byte: bytes,
                     done: Callable[[], bool]) -> None:
    """Send ``byte`` every 0.5 s on each attacker the server has not answered, until done()."""
    give_up = time.monotonic() + PATIENCE
    while not done():
        assert time.monotonic() < give_up, "the server neither answered nor closed in time"
        for sock in attackers:
            if not _answered_by_server(sock):
                sock.sendall(byte)
        time.sleep(0.5)


def _in_thread(call: Callable[[], object]) -> tuple[threading.Thread, list]:
    result: list = []
    thread = threading.Thread(target=lambda: result.append(call()), daemon=True)
    thread.start()
    return thread, result


def _read_to_end(sock: socket.socket) -> bytes:
    """Everything the server sent before closing (a reset after the answer ends it too)."""
    answer = b""
    sock.settimeout(PATIENCE)
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            return answer
        if not chunk:
            return answer
        answer += chunk


def _honest_answered_while_attacked(ttp: TTPServer, attackers: list[socket.socket],
                                    trickle: bytes | None) -> None:
    thread, result = _in_thread(lambda: _honest_get(ttp))
    if trickle is None:
        thread.join(PATIENCE)
    else:
        _while_trickling(attackers, trickle, lambda: not thread.is_alive())
    assert result and result[0][0] == 200, "the honest client was not answered"
    still_open = [sock for sock in attackers if not _answered_by_server(sock)]
    assert len(still_open) == len(attackers), \
        "the honest client was answered only after the server dropped the attackers"


def test_silent_connections_delay_no_one_and_are_closed_at_the_handshake_deadline(ttp):
    before = _metric(ttp, "ttp_http_deadline_closes_total", deadline="tls_handshake")
    attackers = [_tcp(ttp, "127.0.0.3") for _ in range(PER_ADDRESS)]  # never a ClientHello
    try:
        _honest_answered_while_attacked(ttp, attackers, trickle=None)
        for sock in attackers:
            assert _read_to_end(sock) == b""  # closed by the server, nothing sent
        after = _metric(ttp, "ttp_http_deadline_closes_total", deadline="tls_handshake")
        assert after - before == PER_ADDRESS
    finally:
        for sock in attackers:
            sock.close()


def test_slow_headers_hold_no_thread_and_get_408_at_the_header_deadline(ttp):
    before = _metric(ttp, "ttp_http_deadline_closes_total", deadline="header")
    attackers = [_tls(ttp, "127.0.0.4") for _ in range(PER_ADDRESS)]
    try:
        for sock in attackers:
            sock.sendall(b"GET /v1/keys HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        _honest_answered_while_attacked(ttp, attackers, trickle=b"a")
        _while_trickling(attackers, b"a", lambda: all(map(_answered_by_server, attackers)))
        answers = [_read_to_end(sock) for sock in attackers]
        for answer in answers:
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
            assert b'"check":"header_timeout"' in answer
        after = _metric(ttp, "ttp_http_deadline_closes_total", deadline="header")
        assert after - before == PER_ADDRESS
    finally:
        for sock in attackers:
            sock.close()


def test_slow_bodies_hold_no_thread_and_get_408_at_the_body_deadline(ttp):
    before = _metric(ttp, "ttp_http_deadline_closes_total", deadline="body")
    attackers = [_tls(ttp, "127.0.0.5") for _ in range(PER_ADDRESS)]
    try:
        for sock in attackers:
            sock.sendall(b"POST /v1/attestations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{")
        _honest_answered_while_attacked(ttp, attackers, trickle=b" ")
        _while_trickling(attackers, b" ", lambda: all(map(_answered_by_server, attackers)))
        for sock in attackers:
            answer = _read_to_end(sock)
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
            assert b'"check":"body_timeout"' in answer
        after = _metric(ttp, "ttp_http_deadline_closes_total", deadline="body")
        assert after - before == PER_ADDRESS
    finally:
        for sock in attackers:
            sock.close()


def test_a_flood_from_one_address_is_capped_and_others_are_still_served(ttp):
    before = _metric(ttp, "ttp_http_connections_refused_total", limit="per_address")
    flood = [_tcp(ttp, "127.0.0.6") for _ in range(3 * PER_ADDRESS)]
    try:
        give_up = time.monotonic() + PATIENCE
        while _metric(ttp, "ttp_http_connections_refused_total",
                      limit="per_address") - before < 2 * PER_ADDRESS:
            assert time.monotonic() < give_up, "the flood was not capped"
            time.sleep(0.1)
        open_now = [sock for sock in flood if not _answered_by_server(sock)]
        assert len(open_now) == PER_ADDRESS  # the rest were closed on accept
        _honest_answered_while_attacked(ttp, open_now, trickle=None)
        assert _metric(ttp, "ttp_http_connections_refused_total",
                       limit="per_address") - before == 2 * PER_ADDRESS
    finally:
        for sock in flood:
            sock.close()


def test_a_complete_request_on_the_same_connection_is_kept_alive(ttp):
    """The deadlines do not cut an honest keep-alive client between its requests."""
    connection = http.client.HTTPSConnection("127.0.0.1", ttp.port, context=_context(ttp),
                                             timeout=PATIENCE, source_address=(HONEST, 0))
    try:
        for _ in range(3):
            connection.request("GET", "/v1/keys")
            response = connection.getresponse()
            assert response.status == 200 and response.read()
        first_socket = connection.sock
        connection.request("GET", "/")
        assert connection.getresponse().status == 200
        assert connection.sock is first_socket  # no reconnect happened
    finally:
        connection.close()


def test_sigterm_stops_cleanly_with_idle_and_slow_clients_connected(
        tmp_path, ttp_test_ca: CertificateAuthority):
    with start_ttp(tmp_path, tls_ca=ttp_test_ca, ek_ca_files=[ttp_test_ca.cert_file],
                   workers=2) as server:
        idle = http.client.HTTPSConnection("127.0.0.1", server.port, context=_context(server),
                                           timeout=PATIENCE)
        idle.request("GET", "/")
        assert idle.getresponse().read()  # now an idle kept-alive connection
        slow = _tls(server, "127.0.0.7")
        slow.sendall(b"GET / HTTP/1.1\r\n")
        silent = _tcp(server, "127.0.0.7")
        try:
            assert server.stop() == 0  # SIGTERM; a stop that needs SIGKILL is not 0
            assert "TTP worker" in server.log() and "stopped" in server.log()
        finally:
            for sock in (slow, silent):
                sock.close()
            idle.close()


def test_oversized_headers_get_431_without_an_application_slot(ttp):
    sock = _tls(ttp, HONEST)
    try:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
        answer = _read_to_end(sock)
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert b'"check":"headers"' in answer


def test_expect_100_continue_is_answered_before_the_body(ttp):
    sock = _tls(ttp, HONEST)
    try:
        sock.sendall(b"POST /v1/hosts HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n"
                     b"Content-Type: application/json\r\nExpect: 100-continue\r\n\r\n")
        sock.settimeout(PATIENCE)
        assert sock.recv(65536).startswith(b"HTTP/1.1 100 ")
        sock.sendall(b"{}")
        answer = sock.recv(65536)
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 400 ")  # the application judged the (empty) body
