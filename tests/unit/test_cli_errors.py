"""Mistakes with the ``trusted-launch`` command end in one line naming what is wrong."""

from __future__ import annotations

import pathlib

import pytest

from trusted_launch.cmd import cli

DIGEST = "sha256:" + "00" * 32


@pytest.fixture
def not_json(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "quote.json"
    path.write_bytes(b"\x7fELF\x02\x01")
    return path


@pytest.mark.parametrize("argv,expected", [
    (["quote", "verify", "{not_json}"], "{not_json} is not a JSON quote file"),
    (["host", "enroll", "--ttp", "https://127.0.0.1:1", "--host", "h", "--ak-cert-out",
      "{tmp}/ak.pem", "--ttp-ca-file", "{tmp}/missing-ca.pem"],
     "--ttp-ca-file {tmp}/missing-ca.pem: no such file"),
    (["host", "enroll", "--ttp", "https://127.0.0.1:1", "--host", "h", "--ak-cert-out",
      "{tmp}/ak.pem", "--tcti", "bogus"], "unknown TCTI type 'bogus'"),
    (["host", "enroll", "--ttp", "http://127.0.0.1:1", "--host", "h", "--ak-cert-out",
      "{tmp}/ak.pem"], "is not an https:// URL"),
    (["eventlog", "show", "{tmp}/missing.log"], "{tmp}/missing.log: No such file"),
    (["token", "create", "--ttp", "http://127.0.0.1:1", "--sp", "high", "--image-digest",
      DIGEST], "must use https://"),
    (["receipt", "show", "--ttp", "https://127.0.0.1:1", "--token", "abc", "--nonce-file",
      "{tmp}/missing-nonce"], "{tmp}/missing-nonce: No such file"),
])
def test_error_is_one_line_naming_the_problem(argv, expected, not_json, tmp_path, capsys):
    fill = {"tmp": tmp_path, "not_json": not_json}
    status = cli.main([arg.format(**fill) for arg in argv])
    err = capsys.readouterr().err
    assert status == 1 and err.count("\n") == 1, err
    assert expected.format(**fill) in err and "Traceback" not in err
