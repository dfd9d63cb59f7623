"""create_launch_token, the nonce store and ``trusted-launch token create``."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import time

import pytest

from trusted_launch.client.errors import NonceStoreError, TTPKeyError, UnknownProfileName
from trusted_launch.client.launch_token import create_launch_token
from trusted_launch.client.nonce_store import load_nonce, nonce_directory, store_nonce
from trusted_launch.cmd import cli
from trusted_launch.crypto.digest import ImageDigest
from trusted_launch.crypto.token import open_token, token_digest

DIGEST = ImageDigest("sha512", bytes(range(64)))


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_token_opens_at_the_ttp_with_the_stored_nonce(fake_ttp, tmp_path):
    nonce_dir = tmp_path / "nonces"
    text, nonce_path = create_launch_token(fake_ttp.url, "high", DIGEST,
                                           ca_file=fake_ttp.ca_file, lifetime_s=600,
                                           nonce_dir=nonce_dir)
    token = open_token(text, {fake_ttp.key_id: fake_ttp.private_key}, now=time.time())
    assert token.profile == "high" and token.image_digest == DIGEST
    assert time.time() + 590 < token.expires_at <= time.time() + 600
    assert load_nonce(nonce_path) == token.nonce
    assert nonce_path.name == token_digest(text).hex()[:16]
    assert mode(nonce_path) == 0o600 and mode(nonce_dir) == 0o700
    assert token.nonce.hex() not in text


def test_each_token_has_a_fresh_nonce(fake_ttp, tmp_path):
    nonces = set()
    for _ in range(3):
        _, path = create_launch_token(fake_ttp.url, "low", DIGEST, ca_file=fake_ttp.ca_file,
                                      nonce_dir=tmp_path)
        nonces.add(load_nonce(path))
    assert len(nonces) == 3


def test_no_nonce_file_when_the_ttp_key_is_unusable(fake_ttp, tmp_path):
    with pytest.raises(TTPKeyError):
        create_launch_token(fake_ttp.url, "high", DIGEST, nonce_dir=tmp_path / "n")
    assert not (tmp_path / "n").exists()


def test_bad_profile_or_lifetime(fake_ttp, tmp_path):
    with pytest.raises(ValueError, match="security profile name"):
        create_launch_token(fake_ttp.url, "HIGH", DIGEST, ca_file=fake_ttp.ca_file,
                            nonce_dir=tmp_path)
    with pytest.raises(ValueError, match="lifetime"):
        create_launch_token(fake_ttp.url, "high", DIGEST, ca_file=fake_ttp.ca_file,
                            nonce_dir=tmp_path, lifetime_s=0)


def test_nonce_store_never_overwrites(tmp_path):
    store_nonce(bytes(32), "abc", tmp_path)
    with pytest.raises(NonceStoreError, match="already exists"):
        store_nonce(bytes(range(32)), "abc", tmp_path)
    assert load_nonce(tmp_path / "abc") == bytes(32)


def test_nonce_store_does_not_follow_symlinks(tmp_path):
    target = tmp_path / "elsewhere"
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(NonceStoreError):
        store_nonce(bytes(32), "link", tmp_path)
    assert not target.exists()


def test_nonce_directory_is_tightened(tmp_path):
    directory = tmp_path / "open"
    directory.mkdir(mode=0o755)
    os.chmod(directory, 0o755)
    assert nonce_directory(directory) == directory
    assert mode(directory) == 0o700


def test_nonce_directory_must_be_a_directory(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises((NonceStoreError, FileExistsError)):
        nonce_directory(tmp_path / "file")


@pytest.mark.parametrize("name", ["", "../x", ".hidden"])
def test_nonce_file_names_are_checked(tmp_path, name):
    with pytest.raises(NonceStoreError, match="invalid nonce file name"):
        store_nonce(bytes(32), name, tmp_path)


def test_cli_token_create_json_with_image_file(fake_ttp, tmp_path, capsys):
    image = tmp_path / "disk.img"
    image.write_bytes(os.urandom(100000))
    status = cli.main(["token", "create", "--ttp", fake_ttp.url, "--sp", "high",
                       "--image-file", str(image), "--ca-file", fake_ttp.ca_file,
                       "--nonce-dir", str(tmp_path / "n"), "--json"])
    assert status == 0
    output = json.loads(capsys.readouterr().out)
    token = open_token(output["token"], {fake_ttp.key_id: fake_ttp.private_key},
                       now=time.time())
    assert token.image_digest.value == hashlib.sha512(image.read_bytes()).digest()
    assert load_nonce(output["nonce_file"]) == token.nonce
    assert token.nonce.hex() not in json.dumps(output)


def test_cli_token_create_plain_output(fake_ttp, tmp_path, capsys):
    status = cli.main(["token", "create", "--ttp", fake_ttp.url, "--sp", "medium",
                       "--image-digest", "sha256:" + "11" * 32, "--ca-file", fake_ttp.ca_file,
                       "--nonce-dir", str(tmp_path), "--lifetime", "60"])
    captured = capsys.readouterr()
    assert status == 0
    text = captured.out.strip()
    token = open_token(text, {fake_ttp.key_id: fake_ttp.private_key}, now=time.time())
    assert str(token.image_digest) == "sha256:" + "11" * 32
    assert str(tmp_path) in captured.err and "trusted_token=" in captured.err
    assert token.nonce.hex() not in captured.out + captured.err


@pytest.mark.parametrize("extra,problem", [
    (["--image-digest", "sha256:zz"], "not hexadecimal"),
    (["--image-digest", "sha256:" + "11" * 32, "--ca-file", "/nonexistent/ca.pem"],
     "CA file /nonexistent/ca.pem does not exist"),
    (["--image-file", "/nonexistent/disk.img"], "No such file"),
])
def test_cli_token_create_errors_are_one_line(fake_ttp, tmp_path, capsys, extra, problem):
    status = cli.main(["token", "create", "--ttp", fake_ttp.url, "--sp", "high",
                       "--nonce-dir", str(tmp_path), *extra])
    err = capsys.readouterr().err
    assert status == 1
    assert err.startswith("trusted-launch token: error:") and err.count("\n") == 1
    assert re.search(problem, err)


def test_a_profile_the_ttp_does_not_publish_is_refused_naming_the_known_ones(
        fake_ttp, tmp_path, capsys):
    fake_ttp.document["profiles"] = ["low", "medium", "high"]
    status = cli.main(["token", "create", "--ttp", fake_ttp.url, "--sp", "hihg",
                       "--image-digest", "sha256:" + "11" * 32, "--ca-file", fake_ttp.ca_file,
                       "--nonce-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert status == 1 and err.count("\n") == 1
    assert "security profile 'hihg' is not one the TTP" in err
    assert "did you mean 'high'?" in err and "known profiles: low, medium, high" in err
    assert not list(tmp_path.iterdir())  # no nonce file for a refused token
    text, _ = create_launch_token(fake_ttp.url, "medium", DIGEST, ca_file=fake_ttp.ca_file,
                                  nonce_dir=tmp_path)
    assert open_token(text, {fake_ttp.key_id: fake_ttp.private_key},
                      now=time.time()).profile == "medium"


@pytest.mark.parametrize("published,message", [
    ([], "has no security profiles yet"),
    ("high", "'profiles' is not a list of names"),
])
def test_an_empty_or_malformed_profile_list_is_refused(fake_ttp, tmp_path, published, message):
    fake_ttp.document["profiles"] = published
    with pytest.raises((UnknownProfileName, TTPKeyError), match=message):
        create_launch_token(fake_ttp.url, "high", DIGEST, ca_file=fake_ttp.ca_file,
                            nonce_dir=tmp_path)
