"""The ``openstack trusted ...`` commands: through the real OpenStackShell where no cloud
is needed, and with a stand-in client manager where Glance/Nova/Neutron would answer.

The TTP is a real local HTTPS server (``fake_ttp``) and the VM is the real guest
agent in a thread (``agent``); only the cloud endpoints are replaced.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shlex
import time
import uuid

import pytest
import requests
from openstack.compute.v2.flavor import Flavor
from openstack.compute.v2.server import Server
from openstack.image.v2.image import Image
from openstack.network.v2.network import Network
from openstackclient import shell
from osc_lib import exceptions

from tests.unit.guest.conftest import SERVER_ID, agent, config_drive  # noqa: F401
from trusted_launch.client.nonce_store import load_nonce
from trusted_launch.client.osc import plugin
from trusted_launch.client.osc.v1.image_digest import (
    SOURCE_DOWNLOAD,
    SOURCE_FILE,
    SOURCE_GLANCE,
)
from trusted_launch.client.osc.v1.server import CreateServer, VerifyServer
from trusted_launch.client.osc.v1.token import CreateToken
from trusted_launch.crypto.token import open_token

IMAGE_BYTES = b"qcow2 image bytes " * 1000
IMAGE_SHA512 = hashlib.sha512(IMAGE_BYTES).hexdigest()
DIGEST = "sha256:" + "ab" * 32


@pytest.fixture(autouse=True)
def no_cloud_environment(monkeypatch, tmp_path):
    """No credentials or clouds.yaml from the machine leak into the shell."""
    for name in list(os.environ):
        if name.startswith("OS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def openstack(capsys, *argv: str) -> tuple[int, str, str]:
    status = shell.main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def open_with(fake_ttp, token: str):
    return open_token(token, {fake_ttp.key_id: fake_ttp.private_key}, now=time.time())


# --- through the real OpenStackShell and the installed entry points -------------------

def test_shell_token_create_with_a_given_digest(fake_ttp, tmp_path, capsys):
    status, out, _ = openstack(
        capsys, "trusted", "token", "create", "--ttp", fake_ttp.url, "--sp", "high",
        "--image-digest", DIGEST, "--ca-file", fake_ttp.ca_file,
        "--nonce-dir", str(tmp_path / "nonces"), "-f", "json")
    assert status == 0
    shown = json.loads(out)
    token = open_with(fake_ttp, shown["token"])
    assert token.profile == "high" and str(token.image_digest) == DIGEST
    assert load_nonce(shown["nonce_file"]) == token.nonce
    assert token.nonce.hex() not in out
    assert shown["server_create_arguments"].endswith(f"trusted_token={shown['token']}")
    assert f"trusted_ttp={fake_ttp.url}" in shown["server_create_arguments"]


def test_shell_token_create_digests_a_local_image_file(fake_ttp, tmp_path, capsys):
    image = tmp_path / "disk.qcow2"
    image.write_bytes(IMAGE_BYTES)
    status, out, _ = openstack(
        capsys, "trusted", "token", "create", "--ttp", fake_ttp.url, "--sp", "medium",
        "--image-file", str(image), "--ca-file", fake_ttp.ca_file,
        "--nonce-dir", str(tmp_path / "n"), "-f", "value", "-c", "token",
        "-c", "image_digest_source")
    token_text, source = out.splitlines()
    assert status == 0 and source == SOURCE_FILE
    assert open_with(fake_ttp, token_text).image_digest.value.hex() == IMAGE_SHA512


def test_shell_token_create_refuses_an_untrusted_ttp_certificate(fake_ttp, tmp_path, capsys):
    status, out, err = openstack(
        capsys, "trusted", "token", "create", "--ttp", fake_ttp.url, "--sp", "high",
        "--image-digest", DIGEST, "--nonce-dir", str(tmp_path / "n"))
    assert status == 1 and out == ""
    assert "certificate verify failed" in err
    assert not (tmp_path / "n").exists() or not list((tmp_path / "n").iterdir())


def test_shell_image_lookup_without_credentials_is_one_clear_error(fake_ttp, tmp_path, capsys):
    status, out, err = openstack(
        capsys, "trusted", "token", "create", "--ttp", fake_ttp.url, "--sp", "high",
        "--image", "cirros", "--ca-file", fake_ttp.ca_file)
    assert status == 1 and out == ""
    assert "needs the cloud's image service" in err and "auth-url" in err


def test_shell_verify_prints_the_pin(agent, capsys):  # noqa: F811
    status, out, _ = openstack(
        capsys, "trusted", "server", "verify", SERVER_ID, "--address", agent.address,
        "--nonce-file", agent.nonce_file, "-f", "json")
    shown = json.loads(out)
    assert status == 0 and shown["verified"] is True and shown["server_id"] == SERVER_ID
    assert shown["ssh_host_key_fingerprint"] == agent.identity.ssh_host_key_fingerprint
    assert shown["known_hosts"] == f"127.0.0.1 {agent.identity.ssh_host_key}"
    assert agent.nonce.hex() not in out


def test_shell_verify_with_the_wrong_nonce_fails(agent, tmp_path, capsys):  # noqa: F811
    wrong = tmp_path / "wrong"
    wrong.write_text(os.urandom(32).hex())
    status, out, err = openstack(
        capsys, "trusted", "server", "verify", SERVER_ID, "--address", agent.address,
        "--nonce-file", str(wrong))
    assert status == 1 and out == ""
    assert "MAC mismatch" in err


def test_plugin_module_interface():
    assert plugin.API_NAME == "trusted_launch"
    assert plugin.DEFAULT_API_VERSION in plugin.API_VERSIONS

    class Instance:
        _api_version = {"trusted_launch": "1"}

    assert plugin.make_client(Instance()).api_version == "1"


# --- with a stand-in client manager for Glance, Nova and Neutron ------------------------

class FakeImages:
    """Glance as the SDK image proxy shows it: real Image resources, streamed bytes."""

    def __init__(self, image: Image, data: bytes) -> None:
        self.image, self.data = image, data
        self.downloads = 0

    def find_image(self, name_or_id: str, ignore_missing: bool = True) -> Image:
        if name_or_id not in (self.image.id, self.image.name):
            raise exceptions.CommandError(f"No Image found for {name_or_id}")
        return self.image

    def download_image(self, image: Image, *, stream: bool = False) -> requests.Response:
        assert stream and image is self.image
        self.downloads += 1
        response = requests.Response()
        response.status_code = 200
        response.raw = io.BytesIO(self.data)
        return response


class FakeCompute:
    def __init__(self) -> None:
        self.created: list[dict] = []

    def find_flavor(self, name_or_id: str, ignore_missing: bool = True) -> Flavor:
        return Flavor(id="flavor-" + name_or_id, name=name_or_id)

    def find_server(self, name_or_id: str, ignore_missing: bool = True) -> Server:
        return Server(id=SERVER_ID, name=name_or_id)

    def create_server(self, **attributes) -> Server:
        self.created.append(attributes)
        return Server(id=str(uuid.uuid4()), name=attributes["name"], status="BUILD")


class FakeNetworks:
    def find_network(self, name_or_id: str, ignore_missing: bool = True) -> Network:
        return Network(id="net-" + name_or_id, name=name_or_id)


class ClientManager:
    def __init__(self, image: Image, data: bytes) -> None:
        self.image = FakeImages(image, data)
        self.compute = FakeCompute()
        self.network = FakeNetworks()


class FakeApp:
    """The bits of OpenStackShell the commands use; authentication always succeeds."""

    def __init__(self, image: Image, data: bytes = IMAGE_BYTES) -> None:
        self.client_manager = ClientManager(image, data)
        self.authenticated = 0

    def prepare_to_run_command(self, cmd) -> None:
        assert cmd.auth_required
        self.authenticated += 1


def glance_image(**overrides) -> Image:
    attributes = {"id": str(uuid.uuid4()), "name": "cirros", "status": "active",
                  "hash_algo": "sha512", "hash_value": IMAGE_SHA512}
    attributes.update(overrides)
    return Image(**attributes)


def run(command_class, app: FakeApp, *argv: str) -> dict:
    command = command_class(app, None)
    parsed = command.get_parser("openstack trusted").parse_args(list(argv))
    columns, values = command.take_action(parsed)
    return dict(zip(columns, values, strict=True))


def token_args(fake_ttp, tmp_path) -> list[str]:
    return ["--ttp", fake_ttp.url, "--sp", "high", "--ca-file", fake_ttp.ca_file,
            "--nonce-dir", str(tmp_path / "nonces")]


def test_token_from_glance_stored_hash(fake_ttp, tmp_path):
    app = FakeApp(glance_image())
    shown = run(CreateToken, app, *token_args(fake_ttp, tmp_path), "--image", "cirros")
    assert shown["image_digest_source"] == SOURCE_GLANCE
    assert open_with(fake_ttp, shown["token"]).image_digest.value.hex() == IMAGE_SHA512
    assert app.authenticated == 1 and app.client_manager.image.downloads == 0


def test_token_from_downloaded_bytes(fake_ttp, tmp_path):
    app = FakeApp(glance_image(hash_algo=None, hash_value=None))
    shown = run(CreateToken, app, *token_args(fake_ttp, tmp_path), "--image", "cirros",
                "--download-image", "--digest-algorithm", "sha256")
    assert shown["image_digest_source"] == SOURCE_DOWNLOAD
    assert shown["image_digest"] == "sha256:" + hashlib.sha256(IMAGE_BYTES).hexdigest()
    assert app.client_manager.image.downloads == 1


def test_download_that_disagrees_with_glance_is_refused(fake_ttp, tmp_path):
    app = FakeApp(glance_image(), data=IMAGE_BYTES + b"tampered")
    with pytest.raises(exceptions.CommandError, match="the downloaded bytes have sha512"):
        run(CreateToken, app, *token_args(fake_ttp, tmp_path), "--image", "cirros",
            "--download-image")
    assert not (tmp_path / "nonces").exists()


@pytest.mark.parametrize("overrides, problem", [
    ({"hash_value": None}, "has no os_hash_value"),
    ({"hash_algo": "sha384", "hash_value": "00" * 48}, "hashed with sha384"),
    ({"hash_value": "zz" * 64}, "malformed os_hash_value"),
])
def test_unusable_glance_hashes(fake_ttp, tmp_path, overrides, problem):
    app = FakeApp(glance_image(**overrides))
    with pytest.raises(exceptions.CommandError, match=problem):
        run(CreateToken, app, *token_args(fake_ttp, tmp_path), "--image", "cirros")


def test_download_needs_an_image(fake_ttp, tmp_path):
    with pytest.raises(exceptions.CommandError, match="--download-image needs --image"):
        run(CreateToken, FakeApp(glance_image()), *token_args(fake_ttp, tmp_path),
            "--image-digest", DIGEST, "--download-image")


def test_bad_digest_text_is_a_command_error(fake_ttp, tmp_path):
    with pytest.raises(exceptions.CommandError, match="not hexadecimal"):
        run(CreateToken, FakeApp(glance_image()), *token_args(fake_ttp, tmp_path),
            "--image-digest", "sha256:xyz")


def test_server_create_requests_a_trusted_launch(fake_ttp, tmp_path):
    image = glance_image()
    app = FakeApp(image)
    shown = run(CreateServer, app, "vm1", "--image", "cirros", "--flavor", "m1",
                "--network", "private", "--key-name", "mine", *token_args(fake_ttp, tmp_path))
    [created] = app.client_manager.compute.created
    assert created["image_id"] == image.id and created["flavor_id"] == "flavor-m1"
    assert created["networks"] == [{"uuid": "net-private"}] and created["key_name"] == "mine"
    assert created["config_drive"] is True
    metadata = created["metadata"]
    assert metadata["trusted_sp"] == "high" and metadata["trusted_ttp"] == fake_ttp.url
    token = open_with(fake_ttp, metadata["trusted_token"])
    assert token.image_digest.value.hex() == IMAGE_SHA512
    assert load_nonce(shown["nonce_file"]) == token.nonce
    assert shown["status"] == "BUILD" and shown["name"] == "vm1"
    assert all(len(value) <= 255 for value in metadata.values())


def test_server_create_with_auto_network_and_a_given_digest(fake_ttp, tmp_path):
    app = FakeApp(glance_image(hash_value=None))
    run(CreateServer, app, "vm2", "--image", "cirros", "--flavor", "m1",
        "--image-digest", DIGEST, *token_args(fake_ttp, tmp_path))
    [created] = app.client_manager.compute.created
    assert created["networks"] == "auto" and "key_name" not in created
    assert str(open_with(fake_ttp, created["metadata"]["trusted_token"]).image_digest) == DIGEST


def test_server_create_print_command_creates_nothing(fake_ttp, tmp_path):
    app = FakeApp(glance_image())
    shown = run(CreateServer, app, "my vm", "--image", "cirros", "--flavor", "m1",
                "--network", "private", "--print-command", *token_args(fake_ttp, tmp_path))
    assert app.client_manager.compute.created == []
    argv = shlex.split(shown["command"])
    assert argv[:3] == ["openstack", "server", "create"] and argv[-1] == "my vm"
    properties = dict(argv[i + 1].split("=", 1) for i, arg in enumerate(argv)
                      if arg == "--property")
    assert properties["trusted_sp"] == "high" and properties["trusted_ttp"] == fake_ttp.url
    token = open_with(fake_ttp, properties["trusted_token"])
    assert load_nonce(shown["nonce_file"]) == token.nonce
    assert "--config-drive" in argv


def test_verify_by_server_name_looks_up_the_id(agent):  # noqa: F811
    app = FakeApp(glance_image())
    shown = run(VerifyServer, app, "vm1", "--address", agent.address,
                "--nonce-file", agent.nonce_file)
    assert shown["server_id"] == SERVER_ID and app.authenticated == 1
    assert shown["known_hosts"] == f"127.0.0.1 {agent.identity.ssh_host_key}"


def test_verify_with_a_pinned_fingerprint_that_differs(agent):  # noqa: F811
    with pytest.raises(exceptions.CommandError, match="expected SHA256:other"):
        run(VerifyServer, FakeApp(glance_image()), SERVER_ID, "--address", agent.address,
            "--nonce-file", agent.nonce_file, "--expect-fingerprint", "SHA256:other")


def test_verify_with_a_bad_address(tmp_path):
    nonce_file = tmp_path / "nonce"
    nonce_file.write_text(os.urandom(32).hex())
    with pytest.raises(exceptions.CommandError, match="must be HOST:PORT"):
        run(VerifyServer, FakeApp(glance_image()), SERVER_ID, "--address", "nohost",
            "--nonce-file", str(nonce_file))
