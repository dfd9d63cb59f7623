"""Parse the configured TCTI string and open a tpm2-tss TCTI.

Accepted forms (our own format, close to tpm2-tools' ``--tcti``):

* ``device:/dev/tpmrm0`` - a kernel TPM device (``/dev/tpm*``)
* ``swtpm:host=H,port=P`` and ``mssim:host=H,port=P`` - TCP simulators
* ``tabrmd`` or ``tabrmd:bus_name=NAME[,bus_type=system|session]``
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tpm2_pytss import TCTILdr, TSS2_Exception

from trusted_launch.tpm.errors import TCTIConfigError, TPMUnavailable

_DEVICE_PATH = re.compile(r"^/dev/tpm(rm)?[0-9]+$")
_HOSTNAME = re.compile(r"^[A-Za-z0-9.\-:\[\]]{1,253}$")
_BUS_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,255}$")


@dataclass(frozen=True)
class TCTISpec:
    """A validated TCTI: the tpm2-tss module name and its config string."""

    name: str
    conf: str | None

    def __str__(self) -> str:
        return self.name if self.conf is None else f"{self.name}:{self.conf}"


def parse_tcti(text: str) -> TCTISpec:
    """Validate ``text`` and return a :class:`TCTISpec`; raise TCTIConfigError."""
    name, _, conf = text.strip().partition(":")
    parser = _PARSERS.get(name)
    if parser is None:
        raise TCTIConfigError(
            f"TCTI {text!r}: unknown TCTI type {name!r} "
            f"(expected one of {', '.join(sorted(_PARSERS))})")
    return parser(text, conf)


def open_tcti(spec: TCTISpec | str) -> TCTILdr:
    """Open the TCTI; raise TPMUnavailable if the TPM cannot be reached."""
    if isinstance(spec, str):
        spec = parse_tcti(spec)
    try:
        return TCTILdr(spec.name, spec.conf)
    except TSS2_Exception as exc:
        raise TPMUnavailable(f"cannot open TPM through TCTI {spec}: {exc}") from None


def _key_values(text: str, conf: str, allowed: set[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for item in filter(None, conf.split(",")):
        key, sep, value = item.partition("=")
        if not sep or key not in allowed or not value:
            raise TCTIConfigError(
                f"TCTI {text!r}: bad option {item!r} (allowed: {', '.join(sorted(allowed))})")
        values[key] = value
    return values


def _device(text: str, conf: str) -> TCTISpec:
    if not _DEVICE_PATH.match(conf):
        raise TCTIConfigError(f"TCTI {text!r}: device path must look like /dev/tpmrm0")
    return TCTISpec("device", conf)


def _tcp(text: str, conf: str, name: str) -> TCTISpec:
    values = _key_values(text, conf, {"host", "port"})
    host = values.get("host", "127.0.0.1")
    if not _HOSTNAME.match(host):
        raise TCTIConfigError(f"TCTI {text!r}: bad host {host!r}")
    port_text = values.get("port", "2321")
    if not port_text.isdigit() or not 0 < int(port_text) <= 65535:
        raise TCTIConfigError(f"TCTI {text!r}: port must be 1-65535, got {port_text!r}")
    return TCTISpec(name, f"host={host},port={int(port_text)}")


def _tabrmd(text: str, conf: str) -> TCTISpec:
    values = _key_values(text, conf, {"bus_name", "bus_type"})
    if "bus_name" in values and not _BUS_NAME.match(values["bus_name"]):
        raise TCTIConfigError(f"TCTI {text!r}: bad D-Bus name {values['bus_name']!r}")
    if values.get("bus_type", "system") not in ("system", "session"):
        raise TCTIConfigError(f"TCTI {text!r}: bus_type must be system or session")
    return TCTISpec("tabrmd", ",".join(f"{k}={v}" for k, v in values.items()) or None)


_PARSERS = {
    "device": _device,
    "swtpm": lambda text, conf: _tcp(text, conf, "swtpm"),
    "mssim": lambda text, conf: _tcp(text, conf, "mssim"),
    "tabrmd": _tabrmd,
}
