"""Reading a TTP API token from its file: one token, or an error naming the file."""

from __future__ import annotations

import pathlib

import pytest

from trusted_launch.crypto.api_token import TokenFileError, read_api_token


def test_the_token_is_read_without_its_newline(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "token"
    path.write_text("  abc-DEF_123\n")
    assert read_api_token(path) == "abc-DEF_123"


@pytest.mark.parametrize("content", [b"", b"\n", b"two tokens\n", b"\xff\xfe", b"x" * 600])
def test_a_file_that_is_not_one_token_is_refused(tmp_path: pathlib.Path,
                                                 content: bytes) -> None:
    path = tmp_path / "token"
    path.write_bytes(content)
    with pytest.raises(TokenFileError, match=str(path)):
        read_api_token(path)


def test_a_missing_file_is_named(tmp_path: pathlib.Path) -> None:
    with pytest.raises(TokenFileError, match="missing"):
        read_api_token(tmp_path / "missing")
