"""Trusted launch scenarios on the real cloud, driven only through real clients.

Every step is a command a tenant or an operator would type: ``openstack``
with this project's OSC plugin (``trusted token create``, ``trusted server
create``, ``trusted server verify``), the stock ``openstack server ...``
commands, and ``trusted-launch`` (``image encrypt``, ``token create``). The
tenant reaches guests only from inside the tenant network's namespace
(``ip netns exec``), as Neutron's own DHCP namespace would. Results follow the
demo's JSON contract (:mod:`trusted_launch.demo.report`).

Independent launches run concurrently (guests under TCG take tens of seconds
to reach userspace); the re-attestation scenarios then run one after another
on the first accepted server. The two computes reach the TTP over different
transports (``ttp_transports``: HTTPS and oslo.messaging RPC); accepted
launches land on both, and each result names the transport its host used.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable

from trusted_launch.demo.report import ACCEPTED, REFUSED, Recorder, ScenarioResult

AGENT_PORT = 8950
HOST_ATTR = "OS-EXT-SRV-ATTR:host"
ACTIVE_TIMEOUT_S = 600
ANSWER_TIMEOUT_S = 1200  # a TCG guest on a loaded 2-core machine took over 10 min to answer
POLL_S = 1.0
PARALLEL_LAUNCHES = 3
COMMAND_TIMEOUT_S = 300


class CloudCommandFailed(Exception):
    """A client command failed; the message names it and ends with its stderr tail."""


class ScenarioFailed(Exception):
    """A server did not reach the state a scenario waits for; the message says which."""


@dataclasses.dataclass(frozen=True)
class CloudTarget:
    """What the scenarios need to know about the cloud (written by tools/run-cloud.sh)."""

    openstack: str               # the openstack CLI with the trusted launch OSC plugin
    trusted_launch: str          # the trusted-launch CLI
    clouds_yaml: str
    admin_cloud: str
    demo_cloud: str
    network: str                 # the tenant network servers attach to
    namespace: str               # network namespace from which the tenant reaches guests
    ttp_url: str
    ttp_ca_file: str
    flavor: str
    image: str                   # Glance name of the guest image (plain qcow2)
    image_file: str              # its local file (for the tampered and encrypted images)
    high_host: str               # compute host meeting profile high
    low_host: str                # compute host meeting only profile low
    work_dir: str                # nonce files, encrypted images
    compute_logs: dict[str, str] = dataclasses.field(default_factory=dict)  # host -> log
    virt_type: str = ""          # kvm or qemu (TCG), as run-cloud.sh chose it
    migration_blocker: str = ""  # why a cold migration cannot run here ("" if it can)
    ttp_transports: dict[str, str] = dataclasses.field(default_factory=dict)  # host -> https|rpc

    def transport(self, host: str | None) -> str:
        """How ``host`` reaches the TTP (its nova.conf's ttp_transport)."""
        return self.ttp_transports.get(host or "", "https")

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> CloudTarget:
        document = json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
        fields = dataclasses.fields(cls)
        names = {field.name for field in fields}
        required = {field.name for field in fields if field.default is dataclasses.MISSING
                    and field.default_factory is dataclasses.MISSING}
        missing = sorted(required - set(document))
        if missing:
            raise ValueError(f"{path} lacks {', '.join(missing)}")
        return cls(**{key: value for key, value in document.items() if key in names})


@dataclasses.dataclass
class Launch:
    """A server this run created, and the tenant's nonce file for it (if trusted)."""

    name: str
    server_id: str
    nonce_file: str | None = None
    host: str | None = None
    address: str | None = None
    steps_ms: dict[str, float] = dataclasses.field(default_factory=dict)
    admin: bool = False  # created by the operator (forced host), so also restarted as admin


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


class Clients:
    """The real command-line clients, run as subprocesses."""

    def __init__(self, target: CloudTarget) -> None:
        self.target = target
        self.environment = {**os.environ, "OS_CLIENT_CONFIG_FILE": target.clouds_yaml}
        self._local = threading.local()
        pathlib.Path(target.work_dir).mkdir(parents=True, exist_ok=True)

    def run(self, argv: list[str], *, namespace: bool = False,
            timeout: float = COMMAND_TIMEOUT_S) -> str:
        command = (["ip", "netns", "exec", self.target.namespace] if namespace else []) + argv
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                    env=self.environment, check=False)
        except subprocess.TimeoutExpired:
            raise CloudCommandFailed(f"{_describe(argv)} timed out after {timeout:.0f} s"
                                     ) from None
        if result.returncode != 0:
            tail = " | ".join(result.stderr.strip().splitlines()[-3:])
            raise CloudCommandFailed(f"{_describe(argv)} failed: {tail}")
        return result.stdout

    def openstack(self, *args: str, admin: bool = False, namespace: bool = False,
                  output: bool = True, timeout: float = COMMAND_TIMEOUT_S):
        cloud = self.target.admin_cloud if admin else self.target.demo_cloud
        argv = [self.target.openstack, "--os-cloud", cloud, *args]
        if output:
            return json.loads(self.run([*argv, "-f", "json"], namespace=namespace,
                                       timeout=timeout))
        self.run(argv, namespace=namespace, timeout=timeout)
        return None

    def trusted_launch(self, *args: str) -> dict:
        return json.loads(self.run([self.target.trusted_launch, *args, "--json"]))

    # Servers ----------------------------------------------------------------------------
    def _admin(self):
        """An openstacksdk connection as the admin (one per thread), for polling."""
        if getattr(self._local, "admin", None) is None:
            import openstack

            os.environ["OS_CLIENT_CONFIG_FILE"] = self.target.clouds_yaml
            self._local.admin = openstack.connect(cloud=self.target.admin_cloud)
        return self._local.admin

    def show(self, server_id: str) -> dict:
        """The server as ``openstack server show`` shows it to an admin (openstacksdk)."""
        server = self._admin().compute.get_server(server_id)
        return {"id": server.id, "status": server.status, HOST_ATTR: server.compute_host,
                "addresses": {network: [entry.get("addr") for entry in entries]
                              for network, entries in (server.addresses or {}).items()},
                "fault": server.fault or {}, "config_drive": server.has_config_drive,
                "properties": dict(server.metadata or {})}

    def wait_for(self, server_id: str, statuses: set[str],
                 timeout: float = ACTIVE_TIMEOUT_S) -> dict:
        """The server once its status is one of ``statuses`` (ScenarioFailed otherwise)."""
        deadline = time.monotonic() + timeout
        while True:
            server = self.show(server_id)
            status = server.get("status")
            if status in statuses:
                return server
            if status == "ERROR" or time.monotonic() > deadline:
                fault = (server.get("fault") or {}).get("message", "no fault")
                raise ScenarioFailed(f"server {server_id} is {status}, not "
                                     f"{'/'.join(sorted(statuses))}: {fault}")
            time.sleep(POLL_S)

    def address(self, server: dict) -> str:
        """The server's fixed IP on the tenant network."""
        addresses = server.get("addresses") or {}
        for address in addresses.get(self.target.network) or []:
            if address and ":" not in address:
                return address
        raise ScenarioFailed(f"server {server.get('id')} has no IPv4 address on "
                             f"{self.target.network}: {addresses}")

    def verify(self, launch: Launch, nonce_file: str | None = None) -> dict:
        """``openstack trusted server verify`` from inside the tenant namespace."""
        return self.openstack("trusted", "server", "verify", launch.server_id,
                              "--address", f"{launch.address}:{AGENT_PORT}",
                              "--nonce-file", nonce_file or launch.nonce_file,
                              "--timeout", "5", namespace=True)

    def wait_for_answer(self, launch: Launch, timeout: float = ANSWER_TIMEOUT_S) -> dict:
        """Challenge the guest until its agent answers (it is still booting before that)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.verify(launch)
            except CloudCommandFailed as exc:
                if "MAC mismatch" in str(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(POLL_S)

    def agent_status(self, launch: Launch) -> dict:
        """``GET /v1/status`` of the guest agent, from inside the tenant namespace."""
        url = f"http://{launch.address}:{AGENT_PORT}/v1/status"
        script = ("import sys, urllib.request; "
                  "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10)"
                  ".read().decode())")
        return json.loads(self.run([sys.executable, "-c", script, url], namespace=True))

    def delete(self, server_ids: list[str]) -> None:
        """Delete these servers (those already gone are fine) and wait until they are."""
        compute = self._admin().compute
        for server_id in server_ids:
            compute.delete_server(server_id, ignore_missing=True)
        for server_id in server_ids:
            server = compute.find_server(server_id, ignore_missing=True, all_projects=True)
            if server is not None:
                compute.wait_for_delete(server, wait=600)


def _describe(argv: list[str]) -> str:
    words = [pathlib.Path(argv[0]).name]
    for word in argv[1:]:
        if word.startswith("-") or len(words) >= 5:
            break
        words.append(word)
    return " ".join(words)


class Scenarios:
    """The scenario run: launches, checks, and one ScenarioResult per scenario."""

    def __init__(self, target: CloudTarget, recorder: Recorder) -> None:
        self.target = target
        self.clients = Clients(target)
        self.recorder = recorder
        self.created: list[str] = []
        self.images: list[str] = []
        self.run_id = uuid.uuid4().hex[:6]
        self._encrypted: tuple[str, str, str] | None = None
        self._encryption_lock = threading.Lock()
        self._first: Launch | None = None
        self._luks: Launch | None = None

    # Launch kinds -------------------------------------------------------------------------
    def _token_arguments(self, profile: str) -> list[str]:
        return ["--ttp", self.target.ttp_url, "--sp", profile, "--ca-file",
                self.target.ttp_ca_file, "--nonce-dir", str(pathlib.Path(self.target.work_dir)
                                                            / "nonces")]

    def trusted(self, label: str, profile: str = "high", *, image: str | None = None,
                digest_from: list[str] | None = None) -> Launch:
        """``openstack trusted server create`` (the scheduler picks the host)."""
        name = f"tl-{label}-{self.run_id}"
        created = self.clients.openstack(
            "trusted", "server", "create", name, "--image", image or self.target.image,
            "--flavor", self.target.flavor, "--network", self.target.network,
            *self._token_arguments(profile), *(digest_from or []))
        self.created.append(created["id"])
        return Launch(name, created["id"], created["nonce_file"])

    def trusted_on(self, label: str, host: str, token: dict, *,
                   image: str | None = None) -> Launch:
        """A token's ``server create`` arguments, forced onto ``host`` by the operator."""
        name = f"tl-{label}-{self.run_id}"
        properties = token["server_create_arguments"].split()
        created = self.clients.openstack(
            "server", "create", "--image", image or self.target.image,
            "--flavor", self.target.flavor, "--network", self.target.network,
            "--config-drive", "True", "--availability-zone", f"nova:{host}", *properties,
            name, admin=True)
        self.created.append(created["id"])
        return Launch(name, created["id"], token["nonce_file"], admin=True)

    def token(self, profile: str = "high", *, image: str | None = None) -> dict:
        return self.clients.openstack("trusted", "token", "create",
                                      *self._token_arguments(profile),
                                      "--image", image or self.target.image)

    def plain(self, label: str) -> Launch:
        name = f"tl-{label}-{self.run_id}"
        created = self.clients.openstack("server", "create", "--image", self.target.image,
                                         "--flavor", self.target.flavor, "--network",
                                         self.target.network, name)
        self.created.append(created["id"])
        return Launch(name, created["id"])

    def active(self, launch: Launch, started: float) -> Launch:
        server = self.clients.wait_for(launch.server_id, {"ACTIVE"})
        launch.steps_ms["to_active"] = _ms_since(started)
        launch.host = server.get(HOST_ATTR)
        launch.address = self.clients.address(server)
        return launch

    def answered(self, launch: Launch, started: float) -> dict:
        answer = self.clients.wait_for_answer(launch)
        launch.steps_ms["to_answer"] = _ms_since(started)
        return answer

    def refused(self, launch: Launch) -> str:
        """The fault message of a launch that must end in ERROR."""
        server = self.clients.wait_for(launch.server_id, {"ERROR"})
        return (server.get("fault") or {}).get("message", "ERROR without a fault message")

    # Scenarios ----------------------------------------------------------------------------
    def record(self, name: str, expected: str, work: Callable[[ScenarioResult], None]
               ) -> ScenarioResult:
        with self.recorder.scenario(name, expected) as result:
            work(result)
        return result

    def run(self, before_clean_up: Callable[[], None] | None = None) -> None:
        """Every scenario; ``before_clean_up`` runs while the servers still exist (e.g. to
        capture their domain XML), then what the run made is deleted."""
        try:
            first = self._concurrent_launches()
            self._on_accepted_server(first)
        finally:
            try:
                if before_clean_up is not None:
                    before_clean_up()
            finally:
                self._clean_up()

    def _clean_up(self) -> None:
        """Delete what the run made; a failure here is reported, never masks the results."""
        try:
            self.clients.delete(self.created)
            for image in self.images:
                self.clients.openstack("image", "delete", image, admin=True, output=False)
        except Exception as exc:  # reported; the results stand
            print(f"scenarios: clean-up failed: {exc}", file=sys.stderr)
        if self._encrypted is not None:  # the tenant's local copy and its key
            for path in self._encrypted[1:]:
                pathlib.Path(path).unlink(missing_ok=True)

    def _concurrent_launches(self) -> Launch | None:
        """The independent launches, at most PARALLEL_LAUNCHES at a time, in demo order."""
        jobs = {
            "trusted_launch_accepted": (ACCEPTED, self._accepted),
            "trusted_launch_accepted_on_low_host": (ACCEPTED, self._accepted_on_low_host),
            "lower_profile_host_never_chosen": (REFUSED, self._high_never_on_low),
            "untrusted_host_refused": (REFUSED, self._untrusted_host_refused),
            "tampered_image_refused": (REFUSED, self._tampered_image_refused),
            "encrypted_image_boots_on_attested_host": (ACCEPTED, self._encrypted_boots),
            "encrypted_image_key_withheld_from_untrusted_host": (REFUSED,
                                                                 self._encrypted_withheld),
            "plain_launch_unchanged": (ACCEPTED, self._plain_unchanged),
            "cold_migration_reattests": (ACCEPTED, self._cold_migration),
        }
        with concurrent.futures.ThreadPoolExecutor(PARALLEL_LAUNCHES) as pool:
            futures = {name: pool.submit(self._measured, name, expected, work)
                       for name, (expected, work) in jobs.items()}
        for future in futures.values():
            self.recorder.add(future.result())
        return self._first

    @staticmethod
    def _measured(name: str, expected: str, work: Callable[[ScenarioResult], None]
                  ) -> ScenarioResult:
        """Like Recorder.scenario, without recording (results are added in order later)."""
        silent = Recorder()
        with silent.scenario(name, expected) as result:
            work(result)
        return result

    def _accepted(self, result: ScenarioResult) -> None:
        started = time.perf_counter()
        launch = self.active(self.trusted("accepted"), started)
        answer = self.answered(launch, started)
        result.steps_ms.update(launch.steps_ms)
        result.reason = (f"ACTIVE on {launch.host} (profile high; TTP over "
                         f"{self.target.transport(launch.host)}); the guest answered the "
                         f"tenant's challenge at {launch.address} over the tenant network; SSH "
                         f"host key {answer['ssh_host_key_fingerprint']}")
        self._first = launch

    def _accepted_on_low_host(self, result: ScenarioResult) -> None:
        """Profile low (which both hosts meet), on the low host: its TTP transport carries
        an accepted launch, and the guest verifies its receipt there too."""
        started = time.perf_counter()
        launch = self.trusted_on("accepted-low", self.target.low_host, self.token("low"))
        self.active(launch, started)
        self.answered(launch, started)
        result.steps_ms.update(launch.steps_ms)
        receipt = self._verified_receipt(launch)
        result.reason = (f"ACTIVE on {launch.host} (profile low; TTP over "
                         f"{self.target.transport(launch.host)}); the guest answered the "
                         f"tenant's challenge and verified its receipt ({receipt})")

    def _high_never_on_low(self, result: ScenarioResult) -> None:
        started = time.perf_counter()
        launches = [self.trusted(f"high-{index}") for index in range(2)]
        hosts = {self.active(launch, started).host for launch in launches}
        result.steps_ms["to_active"] = _ms_since(started)
        self.clients.delete([launch.server_id for launch in launches])
        for launch in launches:
            self.created.remove(launch.server_id)
        if self.target.low_host in hosts:
            result.outcome = ACCEPTED
            result.reason = (f"the scheduler chose {self.target.low_host} (profile low) for "
                             "profile high")
        else:
            result.outcome = REFUSED
            result.reason = (f"{len(launches)} more launches asking for high all went to "
                             f"{sorted(hosts)}; the filter never offered "
                             f"{self.target.low_host} (low)")

    def _untrusted_host_refused(self, result: ScenarioResult) -> None:
        started = time.perf_counter()
        launch = self.trusted_on("untrusted", self.target.low_host, self.token("high"))
        result.outcome, result.reason = REFUSED, self.refused(launch)
        result.steps_ms["to_error"] = _ms_since(started)

    def _tampered_image_refused(self, result: ScenarioResult) -> None:
        other = pathlib.Path(self.target.work_dir) / "other-image.bin"
        other.write_bytes(b"not the bytes Glance holds\n")
        started = time.perf_counter()
        launch = self.trusted("tampered", digest_from=["--image-file", str(other)])
        result.outcome, result.reason = REFUSED, self.refused(launch)
        result.steps_ms["to_error"] = _ms_since(started)

    def _encrypted_image(self) -> tuple[str, str, str]:
        """(Glance name, key file, local file) of the guest image after ``image encrypt``."""
        with self._encryption_lock:
            if self._encrypted is None:
                work = pathlib.Path(self.target.work_dir)
                name = f"tl-guest-luks-{self.run_id}"
                key_file, encrypted = work / f"{name}.key", work / f"{name}.qcow2"
                self.clients.trusted_launch("image", "encrypt", self.target.image_file,
                                            str(encrypted), "--key-file", str(key_file))
                self.clients.openstack("image", "create", "--disk-format", "qcow2",
                                       "--container-format", "bare", "--file",
                                       str(encrypted), "--public", name, admin=True,
                                       timeout=900)
                self.images.append(name)
                self._encrypted = (name, str(key_file), str(encrypted))
            return self._encrypted

    def _encrypted_token(self, key_file: str, encrypted: str) -> dict:
        """``trusted-launch token create`` over the encrypted file's own digest and key."""
        token = self.clients.trusted_launch(
            "token", "create", *self._token_arguments("high"), "--image-file", encrypted,
            "--image-key-file", key_file)
        token["server_create_arguments"] = " ".join(
            f"--property {key}={token[value]}" for key, value in
            (("trusted_sp", "profile"), ("trusted_ttp", "ttp"), ("trusted_token", "token")))
        return token

    def _encrypted_boots(self, result: ScenarioResult) -> None:
        image, key_file, encrypted = self._encrypted_image()
        token = self._encrypted_token(key_file, encrypted)
        started = time.perf_counter()
        launch = self.trusted_on("luks", self.target.high_host, token, image=image)
        self.active(launch, started)
        self.answered(launch, started)
        result.steps_ms.update(launch.steps_ms)
        result.reason = (f"ACTIVE on {launch.host}: the LUKS root disk opened with the key "
                         "the TTP released with N; the guest answered the tenant's challenge")
        self._luks = launch

    def _encrypted_withheld(self, result: ScenarioResult) -> None:
        image, key_file, encrypted = self._encrypted_image()
        started = time.perf_counter()
        launch = self.trusted_on("luks-untrusted", self.target.low_host,
                                 self._encrypted_token(key_file, encrypted), image=image)
        result.outcome, result.reason = REFUSED, self.refused(launch)
        result.steps_ms["to_error"] = _ms_since(started)

    def _plain_unchanged(self, result: ScenarioResult) -> None:
        started = time.perf_counter()
        launch = self.active(self.plain("plain"), started)
        server = self.clients.show(launch.server_id)
        properties = server.get("properties") or {}
        if any(key.startswith("trusted_") for key in properties):
            raise ScenarioFailed(f"the plain server carries trusted properties {properties}")
        result.steps_ms.update(launch.steps_ms)
        result.reason = (f"no trusted properties: ACTIVE on {launch.host}, config drive "
                         f"{server.get('config_drive') or 'off'}, no TTP call")

    def _cold_migration(self, result: ScenarioResult) -> None:
        """A profile-low server (both hosts meet low) moved by ``openstack server migrate``."""
        if self.target.migration_blocker:
            result.expected = result.outcome = SKIPPED
            result.reason = f"cannot run on this cloud: {self.target.migration_blocker}"
            return
        started = time.perf_counter()
        launch = self.active(self.trusted("migrate", "low"), started)
        self.answered(launch, started)
        source = launch.host
        moved = time.perf_counter()
        self.clients.openstack("server", "migrate", launch.server_id, admin=True,
                               output=False)
        time.sleep(POLL_S)
        self.clients.wait_for(launch.server_id, {"VERIFY_RESIZE"})
        self.clients.openstack("server", "resize", "confirm", launch.server_id, admin=True,
                               output=False)
        server = self.clients.wait_for(launch.server_id, {"ACTIVE"})
        launch.host = server.get(HOST_ATTR)
        if launch.host == source:
            raise ScenarioFailed(f"the server stayed on {source}")
        result.steps_ms["migrate_to_active"] = _ms_since(moved)
        self.clients.wait_for_answer(launch)
        result.steps_ms["migrate_to_answer"] = _ms_since(moved)
        result.reason = (f"profile low: moved from {source} to {launch.host} (cold migration, "
                         "confirmed); the destination re-attested and the guest proved the "
                         "same N")

    def _on_accepted_server(self, launch: Launch | None) -> None:
        """The scenarios that need an accepted, answering server, one after another."""
        if launch is None:
            for name, expected in ON_ACCEPTED_SERVER:
                self.recorder.add(ScenarioResult(name, expected, "not run", "no accepted "
                                                 "server to run it on (see "
                                                 "trusted_launch_accepted)"))
            return
        self.record("vm_challenge_verified", ACCEPTED, lambda r: self._verified(r, launch))
        self.record("wrong_nonce_challenge_rejected", REFUSED,
                    lambda r: self._wrong_nonce(r, launch))
        self.record("receipt_on_config_drive", ACCEPTED, lambda r: self._receipt(r, launch))
        # Each restart is a whole boot: the two run side by side, the stop/start on the
        # encrypted server when it booted (its disk key is released again), else on this one.
        second = self._luks or launch
        restarts = {
            "hard_reboot_reattests": lambda r: self._reattests(
                r, launch, ("server", "reboot", "--hard")),
            "stop_start_reattests": lambda r: self._reattests(
                r, second, ("server", "stop"), ("server", "start")),
        }
        if second is launch:
            for name, work in restarts.items():
                self.record(name, ACCEPTED, work)
            return
        with concurrent.futures.ThreadPoolExecutor(len(restarts)) as pool:
            futures = [pool.submit(self._measured, name, ACCEPTED, work)
                       for name, work in restarts.items()]
        for future in futures:
            self.recorder.add(future.result())

    def _verified(self, result: ScenarioResult, launch: Launch) -> None:
        started = time.perf_counter()
        answer = self.clients.verify(launch)
        result.steps_ms["verify"] = _ms_since(started)
        result.reason = (f"openstack trusted server verify from namespace "
                         f"{self.target.namespace}: guest proved N; SSH host key "
                         f"{answer['ssh_host_key_fingerprint']}")

    def _wrong_nonce(self, result: ScenarioResult, launch: Launch) -> None:
        wrong = pathlib.Path(self.target.work_dir) / "nonces" / f"wrong-{self.run_id}"
        other = self.token("high")  # a fresh N the guest never saw
        wrong.write_bytes(pathlib.Path(other["nonce_file"]).read_bytes())
        wrong.chmod(0o600)
        self.clients.verify(launch, str(wrong))

    def _receipt(self, result: ScenarioResult, launch: Launch) -> None:
        """The TTP's receipt as the guest read it from its config drive (GET /v1/status)."""
        result.reason = f"GET /v1/status: {self._verified_receipt(launch)}"

    def _verified_receipt(self, launch: Launch) -> str:
        """The guest's account of its receipt; ScenarioFailed unless the guest verified it
        (signature by the TTP's receipt key from the config drive, bound to its N, trusted,
        this host)."""
        receipt = self.clients.agent_status(launch)["receipt"]
        if not (receipt.get("present") and receipt.get("verified")
                and receipt.get("signature") == "ok" and receipt.get("bound_to_nonce")
                and receipt.get("verdict") == "trusted" and receipt.get("host") == launch.host):
            raise ScenarioFailed(f"the guest did not verify this launch's receipt: {receipt}")
        return (f"receipt {receipt['verdict']} for profile {receipt['profile']} on host "
                f"{receipt['host']}, bound to N: {receipt['bound_to_nonce']}; signature "
                f"{receipt['signature']} (key from {receipt['key_source']}); verified: "
                f"{receipt['verified']}")

    def _reattests(self, result: ScenarioResult, launch: Launch,
                   *commands: tuple[str, ...]) -> None:
        started = time.perf_counter()
        for command in commands:
            self.clients.openstack(*command, launch.server_id, admin=launch.admin, output=False)
            wanted = {"SHUTOFF"} if command[-1] == "stop" else {"ACTIVE"}
            time.sleep(POLL_S)  # the task state changes after the API answered
            self.clients.wait_for(launch.server_id, wanted)
        result.steps_ms["to_active"] = _ms_since(started)
        self.clients.wait_for_answer(launch)
        result.steps_ms["to_answer"] = _ms_since(started)
        result.reason = (f"{' then '.join(' '.join(c) for c in commands)} ({launch.name}): "
                         f"ACTIVE again on {launch.host}; the host re-attested and the guest "
                         "proved the same N")


SKIPPED = "skipped"  # expected and outcome of a scenario this cloud cannot run (reason says why)
ON_ACCEPTED_SERVER = (("vm_challenge_verified", ACCEPTED),
                      ("wrong_nonce_challenge_rejected", REFUSED),
                      ("receipt_on_config_drive", ACCEPTED), ("hard_reboot_reattests", ACCEPTED),
                      ("stop_start_reattests", ACCEPTED))
GUEST_IMAGE_NAME = "tl-guest"
TARGET_FLAVOR = "tl.small"


def cloud_target(root: pathlib.Path, venv: pathlib.Path) -> CloudTarget:
    """The target of the cloud ``tools/run-cloud.sh`` keeps under ``root`` (its services in
    ``venv``), with the guest image built (or found cached) and uploaded to Glance."""
    import configparser

    from trusted_launch.sandbox.cloud import bringup, identity, network
    from trusted_launch.sandbox.cloud.compute_hosts import COMPUTE_HOSTS
    from trusted_launch.sandbox.cloud.guest_image import build_image
    from trusted_launch.sandbox.cloud.layout import CloudPaths, CloudState

    paths = CloudPaths(root, venv)
    state = CloudState.load_or_create(paths.state_file)
    hosts = {profile: name for name, profile, _ in COMPUTE_HOSTS}
    image = build_image()
    confs = {}
    for name in hosts.values():
        confs[name] = configparser.ConfigParser(interpolation=None)
        confs[name].read(paths.etc / "nova" / f"nova-compute-{name}.conf")
    compute_conf = confs[hosts["high"]]
    target = CloudTarget(
        openstack=paths.bin("openstack"), trusted_launch=paths.bin("trusted-launch"),
        clouds_yaml=str(paths.clouds_yaml), admin_cloud=identity.ADMIN_CLOUD,
        demo_cloud=identity.DEMO_CLOUD, network=bringup.NETWORK, namespace=network.NAMESPACE,
        ttp_url=state.url("ttp"), ttp_ca_file=str(paths.etc / "ttp" / "ca.pem"),
        flavor=TARGET_FLAVOR, image=GUEST_IMAGE_NAME, image_file=str(image.path),
        high_host=hosts["high"], low_host=hosts["low"], work_dir=str(paths.data / "tenant"),
        compute_logs={name: str(paths.log / f"nova-compute-{name}.log")
                      for name in hosts.values()},
        virt_type=compute_conf.get("libvirt", "virt_type", fallback=""),
        migration_blocker=_migration_blocker(list(confs.values())),
        ttp_transports={name: conf.get("trusted_launch", "ttp_transport", fallback="https")
                        for name, conf in confs.items()})
    upload_guest_image(Clients(target), image.path, image.digest)
    return target


def _migration_blocker(confs: list) -> str:
    """Why Nova cannot cold-migrate between these computes, or "" when it can."""
    ips = {conf.get("DEFAULT", "my_ip", fallback="") for conf in confs}
    paths = {conf.get("DEFAULT", "instances_path", fallback="") for conf in confs}
    if len(ips) == 1 and len(paths) > 1:
        return (f"both computes run on one machine (my_ip {ips.pop()}) with their own "
                "instances_path; Nova's libvirt driver then takes the instance directory for "
                "shared storage and never copies the disks (on separate machines it copies "
                "them over ssh, and there is no sshd here)")
    return ""


def upload_guest_image(clients: Clients, path: pathlib.Path, digest: str) -> None:
    """``openstack image create tl-guest`` (public) unless Glance holds this build of it."""
    images = clients.openstack("image", "list", "--name", GUEST_IMAGE_NAME, "--long",
                               admin=True)
    for image in images:
        properties = clients.openstack("image", "show", image["ID"], admin=True)
        if (properties.get("properties") or {}).get("tl_recipe_digest") == digest:
            return
        clients.openstack("image", "delete", image["ID"], admin=True, output=False)
    clients.openstack("image", "create", "--disk-format", "qcow2", "--container-format",
                      "bare", "--public", "--file", str(path), "--property",
                      f"tl_recipe_digest={digest}", GUEST_IMAGE_NAME, admin=True,
                      timeout=900)


def run_scenarios(target: CloudTarget, recorder: Recorder) -> None:
    """Run every scenario against ``target``; results land in ``recorder``."""
    Scenarios(target, recorder).run()
