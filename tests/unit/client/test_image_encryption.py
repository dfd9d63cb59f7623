"""Image encryption with the real qemu-img: LUKS qcow2, key files, the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from trusted_launch.client.image_encryption import (
    ImageEncryptionError,
    ImageKeyFileError,
    encrypt_image,
    load_or_create_key,
    read_key_file,
    write_new_key_file,
)
from trusted_launch.cmd import cli
from trusted_launch.crypto.digest import digest_file
from trusted_launch.crypto.image_key import IMAGE_KEY_SIZE, luks_passphrase

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None,
                                reason="qemu-img is not installed (bindep: qemu-utils)")
MIB = 1024 * 1024


@pytest.fixture
def plain_image(tmp_path):
    path = tmp_path / "plain.raw"
    path.write_bytes(os.urandom(MIB) + b"trusted-launch marker " * 4096 + bytes(MIB))
    return path


def qemu_img(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["qemu-img", *args], capture_output=True, text=True, timeout=120,
                          check=False, **kwargs)


def decrypt_to(image, key: bytes, target) -> subprocess.CompletedProcess:
    """Read the encrypted image with ``key`` (passphrase through a pipe) into raw ``target``."""
    read_fd, write_fd = os.pipe()
    os.write(write_fd, luks_passphrase(key))
    os.close(write_fd)
    try:
        return qemu_img("convert", "-O", "raw", "--object",
                        f"secret,id=s0,file=/dev/fd/{read_fd}", "--image-opts",
                        f"driver=qcow2,file.filename={image},encrypt.key-secret=s0",
                        str(target), pass_fds=(read_fd,))
    finally:
        os.close(read_fd)


def test_encrypted_image_reads_back_only_with_its_key(tmp_path, plain_image):
    key = write_new_key_file(tmp_path / "image.key")
    image = encrypt_image(plain_image, tmp_path / "enc.qcow2", key)
    info = json.loads(qemu_img("info", "--output=json", str(image.path)).stdout)
    assert (info["format"], info["encrypted"]) == ("qcow2", True)
    assert info["format-specific"]["data"]["encrypt"]["format"] == "luks"
    assert image.digest == digest_file(image.path, "sha512") and image.source_format == "raw"
    ciphertext = image.path.read_bytes()
    assert b"trusted-launch marker" not in ciphertext
    assert plain_image.read_bytes()[:4096] not in ciphertext
    wrong = decrypt_to(image.path, os.urandom(IMAGE_KEY_SIZE), tmp_path / "wrong.raw")
    assert wrong.returncode != 0 and "Invalid password" in wrong.stderr
    assert decrypt_to(image.path, key, tmp_path / "back.raw").returncode == 0
    assert (tmp_path / "back.raw").read_bytes() == plain_image.read_bytes()


def test_qcow2_source_is_encrypted_too(tmp_path, plain_image):
    source = tmp_path / "plain.qcow2"
    assert qemu_img("convert", "-f", "raw", "-O", "qcow2", str(plain_image),
                    str(source)).returncode == 0
    key = write_new_key_file(tmp_path / "k")
    image = encrypt_image(source, tmp_path / "enc.qcow2", key)
    assert image.source_format == "qcow2"
    assert decrypt_to(image.path, key, tmp_path / "back.raw").returncode == 0
    assert (tmp_path / "back.raw").read_bytes() == plain_image.read_bytes()


def test_refusals_name_the_problem(tmp_path, plain_image):
    key = write_new_key_file(tmp_path / "k")
    image = encrypt_image(plain_image, tmp_path / "enc.qcow2", key)
    with pytest.raises(ImageEncryptionError, match="already exists"):
        encrypt_image(plain_image, image.path, key)
    with pytest.raises(ImageEncryptionError, match="already encrypted"):
        encrypt_image(image.path, tmp_path / "again.qcow2", key)
    with pytest.raises(ImageEncryptionError, match="does not exist"):
        encrypt_image(tmp_path / "absent", tmp_path / "x.qcow2", key)
    assert not (tmp_path / "again.qcow2").exists()


def test_key_files_are_private_and_never_overwritten(tmp_path):
    path = tmp_path / "image.key"
    key, created = load_or_create_key(path)
    assert created and len(key) == IMAGE_KEY_SIZE
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert path.read_text() == key.hex() + "\n"
    assert load_or_create_key(path) == (key, False)
    with pytest.raises(ImageKeyFileError, match="refusing to overwrite"):
        write_new_key_file(path)
    os.chmod(path, 0o644)
    with pytest.raises(ImageKeyFileError, match="mode 0644") as caught:
        read_key_file(path)
    assert key.hex() not in str(caught.value)
    short = tmp_path / "short.key"
    short.write_text("abcd\n")
    os.chmod(short, 0o600)
    with pytest.raises(ImageKeyFileError, match="32 hex characters"):
        read_key_file(short)


def test_cli_encrypt_prints_the_digest_and_writes_the_key(tmp_path, plain_image, capsys):
    target, key_file = tmp_path / "enc.qcow2", tmp_path / "image.key"
    status = cli.main(["image", "encrypt", str(plain_image), str(target),
                       "--key-file", str(key_file)])
    assert status == 0
    out, err = capsys.readouterr()
    assert out.strip() == str(digest_file(target, "sha512"))
    key = read_key_file(key_file)
    assert key.hex() not in out + err
    status = cli.main(["image", "encrypt", str(plain_image), str(target),
                       "--key-file", str(key_file)])
    assert status == 1 and "already exists" in capsys.readouterr().err


def test_cli_token_create_refuses_an_oversized_token_before_any_connection(tmp_path, capsys):
    key_file = tmp_path / "image.key"
    write_new_key_file(key_file)
    status = cli.main(["token", "create", "--ttp", "https://127.0.0.1:9", "--sp",
                       "x" * 20, "--image-digest", "sha512:" + "00" * 64,
                       "--image-key-file", str(key_file), "--nonce-dir", str(tmp_path / "n")])
    assert status == 1
    err = capsys.readouterr().err
    assert "more than the 255" in err and "profile name 20 characters" in err
    assert not (tmp_path / "n").exists()
