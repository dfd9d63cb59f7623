"""The host->TTP protocol over oslo.messaging RPC on the real RabbitMQ (127.0.0.1:5672).

Real parts only: the TTP runs as ``trusted-launch-ttp`` (HTTPS, for the tenant)
and ``trusted-launch-ttp-rpc`` (RPC, for the hosts) on one database; the hosts
are swtpm TPMs booted from real firmware logs, enrolled over RPC. Each run
uses its own topics, deleted afterwards.

The bus is untrusted: :class:`BusRelay` is a man in the middle on the bus. It
serves the topic the hosts call, forwards each call to the TTP's topic and
each answer back, and may alter or replay either. Every alteration is refused
with its named check, by the TTP or by the host's TPM, and N never crosses the
bus in any form.
"""

from __future__ import annotations

import base64
import json
import pathlib
import secrets
import socket
import uuid
from collections.abc import Callable, Iterator

import kombu
import oslo_messaging
import pytest

from tests.conftest import EVENTLOG_DIR
from trusted_launch.client.launch_token import create_launch_token
from trusted_launch.compute.errors import (
    AttestationRefused,
    ReleaseUnauthenticated,
    ReleaseUnusable,
    TTPUnreachable,
)
from trusted_launch.compute.host_monitor import HostMonitor
from trusted_launch.compute.launch import TrustedLaunchHost, check_image_digest
from trusted_launch.compute.release_receipt import ReceiptKeys
from trusted_launch.compute.ttp_rpc_client import EXCHANGE, NAMESPACE, VERSION, RPCTTPClient
from trusted_launch.crypto._encoding import b64url_decode, b64url_encode
from trusted_launch.crypto.digest import digest_file
from trusted_launch.crypto.nonce import read_nonce_file
from trusted_launch.crypto.receipt import load_receipt_public_key, receipt_key_id
from trusted_launch.crypto.sealing import ReleasedSecrets, release_aad, seal_to_bind_key
from trusted_launch.evidence.tpm2 import parse_public
from trusted_launch.sandbox.databases import DatabaseUnavailable, postgres_database
from trusted_launch.sandbox.hosts import BIND_KEY_PCRS, SandboxHost, start_host
from trusted_launch.sandbox.pki import CertificateAuthority
from trusted_launch.sandbox.services import rabbitmq_reachable
from trusted_launch.sandbox.ttp_process import TTPServer, start_ttp
from trusted_launch.sandbox.ttp_rpc_process import TTPRPCServer, rpc_transport, start_ttp_rpc
from trusted_launch.ttp import rpc as ttp_rpc

PROFILES_DIR = pathlib.Path(__file__).resolve().parents[2] / "examples" / "profiles"
TRUSTED_LOG = EVENTLOG_DIR / "secureboot_binary_bios_measurements"
UNTRUSTED_LOG = EVENTLOG_DIR / "coreos_36_shielded_vm_no_secure_boot_eventlog"
RABBIT_URL = "rabbit://guest:guest@127.0.0.1:5672/"
SANDBOX_MAX_BODY = 262144  # [api] max_request_body_size in the sandbox's ttp.conf



pytestmark = [pytest.mark.swtpm, pytest.mark.rabbitmq,
              pytest.mark.skipif(not rabbitmq_reachable(),
                                 reason="RabbitMQ is not listening on 127.0.0.1:5672")]


def _unique_topic(role: str) -> str:
    return f"tl-test-{role}-{secrets.token_hex(6)}"


def _delete_queues(*names: str) -> None:
    with kombu.Connection("amqp://guest:guest@127.0.0.1:5672//") as connection:
        channel = connection.channel()
        for name in names:
            channel.queue_delete(name)


# The man in the middle ---------------------------------------------------------------------

class BusRelay:
    """Serves ``front`` (where the hosts call), forwards to ``back`` (where the TTP listens).

    ``requests(operation, arguments)`` and ``answers(operation, answer)`` may
    alter what passes; ``wire`` keeps the JSON of everything seen on the bus.
    """

    def __init__(self, transport: oslo_messaging.Transport, front: str, back: str) -> None:
        self.front = front
        self.requests: Callable[[str, dict], dict] = lambda operation, arguments: arguments
        self.answers: Callable[[str, dict], dict] = lambda operation, answer: answer
        self.wire: list[str] = []
        self.calls: list[tuple[str, dict, dict]] = []
        back_target = oslo_messaging.Target(exchange=EXCHANGE, topic=back, namespace=NAMESPACE,
                                            version=VERSION)
        self.forward = oslo_messaging.get_rpc_client(transport, back_target, timeout=30)
        self._server = oslo_messaging.get_rpc_server(
            transport, oslo_messaging.Target(exchange=EXCHANGE, topic=front, server="relay"),
            [_RelayEndpoint(self)],
            access_policy=oslo_messaging.DefaultRPCAccessPolicy)

    def reset(self) -> None:
        self.requests = lambda operation, arguments: arguments
        self.answers = lambda operation, answer: answer
        self.wire.clear()
        self.calls.clear()

    def relay(self, operation: str, arguments: dict) -> dict:
        self.wire.append(json.dumps(arguments))
        altered = self.requests(operation, dict(arguments))
        answer = self.forward.call({}, operation, **altered)
        self.wire.append(json.dumps(answer))
        self.calls.append((operation, arguments, answer))
        return self.answers(operation, answer)

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop()
        self._server.wait()


class _RelayEndpoint:
    target = oslo_messaging.Target(namespace=NAMESPACE, version=VERSION)

    def __init__(self, relay: BusRelay) -> None:
        self._relay = relay

    def attest(self, ctxt, **arguments):
        return self._relay.relay("attest", arguments)

    def host_challenge(self, ctxt, **arguments):
        return self._relay.relay("host_challenge", arguments)

    def host_attestation(self, ctxt, **arguments):
        return self._relay.relay("host_attestation", arguments)


def flip(data: bytes, index: int | None = None) -> bytes:
    """``data`` with one bit flipped at ``index`` (default: the middle byte)."""
    altered = bytearray(data)
    altered[len(data) // 2 if index is None else index] ^= 0x01
    return bytes(altered)


def edit_body(arguments: dict, edit: Callable[[dict], None]) -> dict:
    """The RPC arguments with their JSON body text changed by ``edit``."""
    body = json.loads(arguments["body"])
    edit(body)
    return dict(arguments, body=json.dumps(body))


def flip_b64(body: dict, field: str) -> None:
    body[field] = base64.b64encode(flip(base64.b64decode(body[field]))).decode()


def flip_token(body: dict) -> None:
    body["token"] = b64url_encode(flip(b64url_decode(body["token"])))


def wire_forms(secret: bytes) -> list[str]:
    """Every text form N could take in a JSON message."""
    return [secret.hex(), base64.b64encode(secret).decode(), b64url_encode(secret),
            json.dumps(secret.decode("latin-1"))[1:-1]]


# Fixtures ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """PostgreSQL as an operator runs the TTP; SQLite where no PostgreSQL is reachable."""
    try:
        with postgres_database("ttp_rpc_test") as url:
            yield url
    except DatabaseUnavailable:
        yield f"sqlite:///{tmp_path_factory.mktemp('rpc-ttp-db') / 'ttp.sqlite'}"


@pytest.fixture(scope="module")
def ttp(database_url: str, swtpm_state_cache,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[TTPServer]:
    directory = tmp_path_factory.mktemp("rpc-ttp")
    swtpm_state_cache.state(0)
    with start_ttp(directory / "ttp", tls_ca=CertificateAuthority(directory / "tls-ca"),
                   database_url=database_url, ek_ca_files=swtpm_state_cache.ca.ek_ca_certs,
                   profiles_dir=PROFILES_DIR, debug=True) as server:
        yield server


@pytest.fixture(scope="module")
def transport() -> Iterator[oslo_messaging.Transport]:
    transport = rpc_transport(RABBIT_URL)
    yield transport
    transport.cleanup()


@pytest.fixture(scope="module")
def rpc_server(ttp: TTPServer, transport) -> Iterator[TTPRPCServer]:
    topic = _unique_topic("ttp")
    try:
        with start_ttp_rpc(ttp, transport, transport_url=RABBIT_URL, topic=topic,
                           debug=True) as server:
            yield server
    finally:
        _delete_queues(topic, f"{topic}.sandbox")


@pytest.fixture(scope="module")
def relay_topic(transport, rpc_server: TTPRPCServer) -> Iterator[BusRelay]:
    relay = BusRelay(transport, _unique_topic("front"), rpc_server.topic)
    relay.start()
    yield relay
    relay.stop()
    _delete_queues(relay.front, f"{relay.front}.relay")


@pytest.fixture
def relay(relay_topic: BusRelay) -> Iterator[BusRelay]:
    relay_topic.reset()
    yield relay_topic
    relay_topic.reset()


@pytest.fixture(scope="module")
def receipt_keys(ttp: TTPServer) -> ReceiptKeys:
    """The TTP's receipt key, pinned by the operator from GET /v1/keys (HTTPS)."""
    key = load_receipt_public_key(ttp.request("GET", "/v1/keys").json()["receipt_keys"][0]
                                  ["public_key"])
    return {receipt_key_id(key): key}


@pytest.fixture(scope="module")
def hosts(ttp: TTPServer, rpc_server: TTPRPCServer, transport, receipt_keys,
          swtpm_state_cache) -> Iterator[dict[str, SandboxHost]]:
    """Two hosts enrolled over RPC: ``trusted`` (Secure Boot) and ``untrusted`` (low only).

    As ``ttp_transport = rpc`` requires, each authenticates releases by the TTP's receipt.
    """
    suffix = secrets.token_hex(3)
    started: dict[str, SandboxHost] = {}
    try:
        for index, (role, log) in enumerate((("trusted", TRUSTED_LOG),
                                             ("untrusted", UNTRUSTED_LOG))):
            started[role] = start_host(f"rpc-{role}-{suffix}", swtpm_state_cache.state(index),
                                       swtpm_state_cache.ca, log, ttp, pool_size=2,
                                       client=rpc_server.client(transport),
                                       receipt_keys=receipt_keys)
        yield started
    finally:
        for host in started.values():
            host.close()


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("rpc-image") / "image.raw"
    path.write_bytes(secrets.token_bytes(1 << 20))
    return path


@pytest.fixture
def tenant(ttp: TTPServer, image: pathlib.Path, tmp_path: pathlib.Path):
    """make(profile) -> (token, N), fetched from the TTP over HTTPS as a tenant does."""
    def make(profile: str = "high") -> tuple[str, bytes]:
        token, nonce_path = create_launch_token(ttp.url, profile, digest_file(image, "sha512"),
                                                ca_file=str(ttp.ca_file), nonce_dir=tmp_path)
        return token, read_nonce_file(nonce_path)
    return make


@pytest.fixture
def via_relay(relay: BusRelay, rpc_server: TTPRPCServer, transport) -> RPCTTPClient:
    """A host's RPC client whose calls pass through the man in the middle."""
    return rpc_server.client(transport, topic=relay.front)


def _launch() -> str:
    return str(uuid.uuid4())


# The protocol over RPC -----------------------------------------------------------------------

def test_launch_over_rpc_releases_n_and_is_audited(hosts, ttp, rpc_server, transport, tenant,
                                                   image):
    token, nonce = tenant("high")
    client = rpc_server.client(transport)
    pending = hosts["trusted"].runner.attest(client, token=token, launch_id=_launch())
    released = hosts["trusted"].runner.open(pending)
    assert released.nonce == nonce
    check_image_digest(released.image_digest, digest_file(image, "sha512").value)
    record = ttp.admin("GET", f"/v1/attestations/{pending.attestation_id}").json()
    assert record["verdict"] == "trusted"
    assert record["requester"] == f"rpc:{rpc_server.topic}"
    assert pending.receipt is not None


def test_refusal_over_rpc_names_the_check(hosts, rpc_server, transport, tenant):
    token, _ = tenant("high")
    with pytest.raises(AttestationRefused) as refused:
        hosts["untrusted"].runner.release(rpc_server.client(transport), token=token,
                                          launch_id=_launch())
    assert refused.value.check == "profile_policy"
    assert "Secure Boot" in refused.value.reason


def test_periodic_host_attestation_over_rpc(hosts, rpc_server, transport):
    host = hosts["trusted"]
    monitor = HostMonitor(device=host.device, ttp=rpc_server.client(transport),
                          host_name=host.name, read_event_log=host.event_log.read_bytes,
                          pcr_selection="sha256:0,1,2,3,4,5,6,7")
    report = monitor.run_once()
    assert (report.profile, report.from_ttp) == ("high", True)


@pytest.mark.parametrize("body", [
    "[]",
    "{",
    '{"host": "x"}',
    json.dumps({"launch_id": "l", "pad": "x" * 300_000}),
], ids=["not-an-object", "not-json", "fields-missing", "too-large"])
def test_rpc_and_https_give_the_same_answer_to_bad_bodies(ttp, rpc_server, transport, body):
    target = oslo_messaging.Target(exchange=EXCHANGE, topic=rpc_server.topic,
                                   namespace=NAMESPACE, version=VERSION)
    raw = oslo_messaging.get_rpc_client(transport, target, timeout=30)
    over_rpc = raw.call({}, "attest", ttp_url=ttp.url, body=body)
    assert (over_rpc["status"], over_rpc["body"]) == _over_https(ttp, body.encode())
    assert over_rpc["status"] in (400, 413)


def _over_https(ttp: TTPServer, data: bytes) -> tuple[int, dict]:
    """(status, JSON body) of POST /v1/attestations with ``data`` over HTTPS.

    A body over the limit is refused from its announced length; it is not sent
    (the server closes the connection while a client would still be sending).
    """
    head = ("POST /v1/attestations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
            "Connection: close\r\n\r\n").encode()
    answer = ttp.raw(head, b"" if len(data) > SANDBOX_MAX_BODY else data)
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2])


def test_request_for_another_ttp_refused(hosts, rpc_server, transport, tenant):
    token, _ = tenant("high")
    client = rpc_server.client(transport, url="https://ttp.other.example:9443")
    with pytest.raises(AttestationRefused) as refused:
        hosts["trusted"].runner.release(client, token=token, launch_id=_launch())
    assert refused.value.check == "ttp_url"


def test_no_ttp_on_the_topic_is_unreachable(hosts, ttp, transport, tenant):
    token, _ = tenant("high")
    client = RPCTTPClient(ttp.url, transport, topic=_unique_topic("nobody"), timeout=1,
                          retries=0)
    with pytest.raises(TTPUnreachable, match="no TTP answered"):
        hosts["trusted"].runner.release(client, token=token, launch_id=_launch())


def test_bus_down_is_unreachable_within_the_timeout(hosts, ttp, tenant):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    transport = rpc_transport(f"rabbit://guest:guest@127.0.0.1:{closed}/")
    token, _ = tenant("high")
    client = RPCTTPClient(ttp.url, transport, topic=_unique_topic("down"), timeout=2,
                          retries=0)
    with pytest.raises(TTPUnreachable, match="message bus is unreachable"):
        hosts["trusted"].runner.release(client, token=token, launch_id=_launch())


def test_endpoint_and_client_agree_on_the_rpc_api():
    assert (ttp_rpc.EXCHANGE, ttp_rpc.NAMESPACE, ttp_rpc.VERSION) == (EXCHANGE, NAMESPACE,
                                                                      VERSION)


# A man in the middle on the bus --------------------------------------------------------------

def test_relay_passes_an_honest_launch_and_never_sees_n(hosts, relay, via_relay, tenant):
    token, nonce = tenant("high")
    released = hosts["trusted"].runner.release(via_relay, token=token, launch_id=_launch())
    assert released.nonce == nonce
    assert [call[0] for call in relay.calls] == ["attest"]
    assert relay.calls[0][2]["status"] == 200
    wire = "\n".join(relay.wire)
    assert not [form for form in wire_forms(nonce) if form in wire]


@pytest.mark.parametrize(("edit", "check"), [
    (flip_token, "token_malformed"),
    (lambda body: flip_b64(body, "certify_info"), "certify_signature"),
    (lambda body: flip_b64(body, "certify_signature"), "certify_signature"),
    (lambda body: flip_b64(body, "bind_key_public"), "bind_key_name"),
    (lambda body: body.update(launch_id=str(uuid.uuid4())), "certify_binding"),
], ids=["token", "certify-info", "certify-signature", "bind-key", "launch-id"])
def test_tampered_request_refused_by_ttp(hosts, relay, via_relay, tenant, edit, check):
    token, nonce = tenant("high")
    relay.requests = lambda operation, arguments: edit_body(arguments, edit)
    with pytest.raises(AttestationRefused) as refused:
        hosts["trusted"].runner.release(via_relay, token=token, launch_id=_launch())
    assert refused.value.check == check
    assert not [form for form in wire_forms(nonce) if form in "\n".join(relay.wire)]


def test_trusted_event_log_swapped_into_untrusted_host_refused(hosts, relay, via_relay, tenant):
    token, _ = tenant("high")
    trusted_log = base64.b64encode(TRUSTED_LOG.read_bytes()).decode()
    relay.requests = lambda operation, arguments: edit_body(
        arguments, lambda body: body.update(event_log=trusted_log))
    with pytest.raises(AttestationRefused) as refused:
        hosts["untrusted"].runner.release(via_relay, token=token, launch_id=_launch())
    assert refused.value.check == "bind_key_policy"


def test_tampered_release_refused_by_tpm(hosts, relay, via_relay, tenant):
    token, nonce = tenant("high")

    def tamper(operation: str, answer: dict) -> dict:
        body = dict(answer["body"])
        flip_b64(body, "released")
        return dict(answer, body=body)

    relay.answers = tamper
    with pytest.raises(ReleaseUnusable) as refused:
        hosts["trusted"].runner.release(via_relay, token=token, launch_id=_launch())
    assert refused.value.check == "release_unusable"
    assert relay.calls[0][2]["status"] == 200  # the TTP did release; the bus broke it
    assert not [form for form in wire_forms(nonce) if form in "\n".join(relay.wire)]


def test_replayed_attestation_request_refused(hosts, relay, via_relay, tenant, ttp):
    token, _ = tenant("high")
    hosts["trusted"].runner.release(via_relay, token=token, launch_id=_launch())
    recorded = relay.calls[0][1]
    replayed = relay.forward.call({}, "attest", **recorded)
    assert replayed["status"] == 403
    assert replayed["body"]["error"]["check"] == "token_replayed"


def test_replayed_periodic_quote_refused(hosts, relay, via_relay):
    host = hosts["trusted"]
    monitor = HostMonitor(device=host.device, ttp=via_relay, host_name=host.name,
                          read_event_log=host.event_log.read_bytes,
                          pcr_selection=BIND_KEY_PCRS)
    assert monitor.run_once().profile == "high"
    operation, recorded, answer = relay.calls[-1]
    assert (operation, answer["status"]) == ("host_attestation", 200)
    replayed = relay.forward.call({}, "host_attestation", **recorded)
    assert replayed["status"] == 403
    assert replayed["body"]["error"]["check"] == "nonce_unknown"


def test_tampered_periodic_quote_refused(hosts, relay, via_relay):
    host = hosts["trusted"]
    relay.requests = lambda operation, arguments: (
        edit_body(arguments, lambda body: flip_b64(body, "quote"))
        if operation == "host_attestation" else arguments)
    monitor = HostMonitor(device=host.device, ttp=via_relay, host_name=host.name,
                          read_event_log=host.event_log.read_bytes,
                          pcr_selection=BIND_KEY_PCRS)
    report = monitor.run_once()
    assert (report.profile, report.from_ttp) == (None, False)
    assert report.check == "quote_signature"


def test_replayed_release_refused_by_tpm(hosts, relay, via_relay, tenant):
    earlier_token, _ = tenant("high")
    hosts["trusted"].runner.release(via_relay, token=earlier_token, launch_id=_launch())
    earlier_answer = relay.calls[0][2]
    token, _ = tenant("high")
    relay.answers = lambda operation, answer: earlier_answer
    with pytest.raises(ReleaseUnusable) as refused:
        hosts["trusted"].runner.release(via_relay, token=token, launch_id=_launch())
    assert refused.value.check == "release_unusable"
    assert relay.calls[1][2]["body"]["released"] != earlier_answer["body"]["released"]


def test_rpc_server_log_holds_no_token_or_n(hosts, rpc_server, transport, tenant):
    token, nonce = tenant("high")
    hosts["trusted"].runner.release(rpc_server.client(transport), token=token,
                                    launch_id=_launch())
    log = rpc_server.log()
    assert "serving RPC topic" in log
    assert token not in log and token[20:60] not in log
    assert not [form for form in wire_forms(nonce) if form in log]


def forge_release(nonce: bytes, image: pathlib.Path, *, keep_receipt: bool):
    """An answer filter: the bus's own release of ``nonce``, sealed to the request's bind key.

    Everything it needs is public: the bind key's public area and the launch id
    are in the request, the image digest is Glance's. The TTP's genuine
    receipt is kept (or dropped) beside it.
    """
    def forge(operation: str, answer: dict, arguments: dict) -> dict:
        request = json.loads(arguments["body"])
        public = parse_public(base64.b64decode(request["bind_key_public"]), tpm2b=True)
        envelope = seal_to_bind_key(
            public.public_key(), ReleasedSecrets(nonce, digest_file(image, "sha512")),
            aad=release_aad(request["launch_id"], public.name))
        body = dict(answer["body"], released=base64.b64encode(envelope).decode())
        if not keep_receipt:
            body.pop("receipt", None)
        return dict(answer, body=body)
    return forge


def _with_request(relay: BusRelay, forge) -> Callable[[str, dict], dict]:
    return lambda operation, answer: forge(operation, answer, relay.calls[-1][1])


def _without_receipt_check(host: SandboxHost) -> TrustedLaunchHost:
    """The same host, TPM and pool, not authenticating releases (HTTPS relies on TLS)."""
    return TrustedLaunchHost(device=host.device, pool=host.pool,
                             identity=host.runner._identity,
                             read_event_log=host.event_log.read_bytes,
                             bind_key_pcrs=BIND_KEY_PCRS)


def test_forged_release_opens_without_the_receipt_check(hosts, relay, via_relay, tenant,
                                                        image):
    """Why RPC needs the receipt check: the bus can seal a release of its own choosing."""
    token, nonce = tenant("high")
    chosen = secrets.token_bytes(32)
    relay.answers = _with_request(relay, forge_release(chosen, image, keep_receipt=True))
    released = _without_receipt_check(hosts["trusted"]).release(via_relay, token=token,
                                                                launch_id=_launch())
    assert released.nonce == chosen != nonce


@pytest.mark.parametrize("keep_receipt", [True, False], ids=["genuine-receipt", "no-receipt"])
def test_forged_release_refused_by_receipt_check(hosts, relay, via_relay, tenant, image,
                                                 keep_receipt):
    token, _ = tenant("high")
    relay.answers = _with_request(relay, forge_release(secrets.token_bytes(32), image,
                                                       keep_receipt=keep_receipt))
    with pytest.raises(ReleaseUnauthenticated) as refused:
        hosts["trusted"].runner.release(via_relay, token=token, launch_id=_launch())
    assert refused.value.check == "release_unauthenticated"
    assert ("not bound to this launch nonce" if keep_receipt else "no signed receipt") \
        in refused.value.reason


def test_receipt_of_another_launch_refused(hosts, relay, via_relay, tenant):
    earlier_token, _ = tenant("high")
    hosts["trusted"].runner.release(via_relay, token=earlier_token, launch_id=_launch())
    earlier_receipt = relay.calls[0][2]["body"]["receipt"]
    token, _ = tenant("high")
    relay.answers = lambda operation, answer: dict(
        answer, body=dict(answer["body"], receipt=earlier_receipt))
    with pytest.raises(ReleaseUnauthenticated, match="another launch token"):
        hosts["trusted"].runner.release(via_relay, token=token, launch_id=_launch())
