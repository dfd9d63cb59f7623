"""Reading a TTP API token (X-Auth-Token) from the file an operator put it in.

Compute hosts (role host), schedulers and monitoring (role reader) keep the
token ``trusted-launch-ttp-manage token create`` printed in a file readable
only by their service user; it is read once, never logged.
"""

from __future__ import annotations

import pathlib

MAX_TOKEN_FILE = 512


class TokenFileError(ValueError):
    """The token file is missing, unreadable, empty or not one line of token text."""


def read_api_token(path: str | pathlib.Path) -> str:
    """The token in ``path`` (surrounding whitespace removed); TokenFileError naming the file."""
    try:
        data = pathlib.Path(path).read_bytes()[:MAX_TOKEN_FILE + 1]
    except OSError as exc:
        raise TokenFileError(f"TTP API token file {path}: {exc.strerror or exc}") from None
    try:
        token = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise TokenFileError(f"TTP API token file {path}: not ASCII text") from None
    if len(data) > MAX_TOKEN_FILE or not token or any(c.isspace() for c in token):
        raise TokenFileError(f"TTP API token file {path}: must hold one token (the line "
                             "'trusted-launch-ttp-manage token create' printed)")
    return token
