"""Load ``ttp.conf`` and check it before the TTP or its admin tool touches anything.

One loader for ``trusted-launch-ttp``, ``trusted-launch-ttp-manage`` and the
WSGI entry point. It refuses, each with a one-line :class:`ConfigError`
naming the option, the file and the fix: a missing configuration file, an
option or section the TTP does not read (``bind_prot``), a value of the wrong
type, a database URL whose driver is not installed or whose SQLite directory
does not exist, and (for the server) TLS files that are missing or unusable.
"""

from __future__ import annotations

import difflib
import os
import pathlib
import re
import ssl
from collections.abc import Iterator, Sequence

from oslo_config import cfg
from oslo_log import log as logging

from trusted_launch.conf import ttp as ttp_conf

DEFAULT_CONFIG = "/etc/trusted-launch/ttp.conf"
SAMPLE = "etc/trusted-launch-ttp.conf.sample"
# SQLAlchemy drivers per backend, in order of preference, that the URL may name.
_DRIVERS = {"postgresql": ("psycopg2", "psycopg", "pg8000"),
            "mysql": ("pymysql", "mysqldb", "mysqlconnector")}
_DRIVER_MODULES = {"psycopg2": "psycopg2", "psycopg": "psycopg", "pg8000": "pg8000",
                   "pymysql": "pymysql", "mysqldb": "MySQLdb",
                   "mysqlconnector": "mysql.connector"}


class ConfigError(Exception):
    """A configuration the TTP cannot run with; ``str()`` is one line naming the fix."""


def load_config(config_files: Sequence[str] | None, *, prog: str,
                argv: Sequence[str] = (), description: str | None = None) -> cfg.ConfigOpts:
    """Parse ``config_files`` (default: DEFAULT_CONFIG if it exists) and ``argv``; check it.

    ``argv`` may carry ``--config-file``/``--config-dir`` and oslo.log's
    options (the server's command line). Raises :class:`ConfigError`.
    """
    conf = cfg.ConfigOpts()
    ttp_conf.register_opts(conf)
    logging.register_options(conf)
    defaults = list(config_files) if config_files else _existing([DEFAULT_CONFIG])
    try:
        conf(list(argv), project="trusted-launch", prog=prog, default_config_files=defaults,
             description=description)
    except cfg.ConfigFilesNotFoundError as exc:
        missing = ", ".join(exc.config_files)
        raise ConfigError(f"configuration file {missing} not found: pass --config-file with "
                          f"the path of the TTP's ttp.conf (template: {SAMPLE})") from None
    except cfg.ConfigFilesPermissionDeniedError as exc:
        files = ", ".join(exc.config_files)
        raise ConfigError(f"configuration file {files} is not readable by this user: run "
                          "as the TTP's service user or fix the file's permissions") from None
    except cfg.ConfigFileParseError as exc:
        raise ConfigError(f"configuration file {exc.config_file} is not an ini file: "
                          f"{exc.msg}") from None
    files = parsed_files(conf)
    if not files:
        raise ConfigError(f"no configuration file: pass --config-file PATH (or create "
                          f"{DEFAULT_CONFIG}; template: {SAMPLE})")
    check_values(conf)  # first: listing the known options reads [DEFAULT]'s values
    if _register_library_opts(conf):
        check_values(conf)
    check_known_options(conf, files)
    check_database_url(conf.database.connection)
    return conf


def _existing(paths: Sequence[str]) -> list[str]:
    return [path for path in paths if os.path.exists(path)]


def parsed_files(conf: cfg.ConfigOpts) -> list[str]:
    """The files ``conf`` read: every --config-file, then --config-dir's ``*.conf``."""
    files = list(conf.config_file or [])
    if conf.config_dir:
        files += sorted(str(p) for p in pathlib.Path(conf.config_dir).glob("*.conf"))
    return files


def _register_library_opts(conf: cfg.ConfigOpts) -> bool:
    """Options of libraries the configuration switches on (their sections become known)."""
    if not conf.host_status.notifications_enabled:
        return False
    from trusted_launch.ttp.host_notifications import messaging_options
    for group, opts in messaging_options():
        conf.register_opts(opts, group=None if group == "DEFAULT" else group)
    return True


def _known_groups(conf: cfg.ConfigOpts) -> dict[str, set[str]]:
    groups: dict[str, set[str]] = {"DEFAULT": set()}
    for name in conf:
        value = conf[name]
        if isinstance(value, cfg.ConfigOpts.GroupAttr):
            groups[name.lower()] = set(value)
        else:
            groups["DEFAULT"].add(name)
    return groups


def _file_options(path: str) -> Iterator[tuple[str, str]]:
    sections: dict[str, dict[str, list[str]]] = {}
    cfg.ConfigParser(path, sections).parse()
    for section, options in sections.items():
        group = section if section == "DEFAULT" else section.lower()
        if not options:
            yield group, ""
        for option in options:
            yield group, option.replace("-", "_")


def check_known_options(conf: cfg.ConfigOpts, files: Sequence[str]) -> None:
    """Refuse a section or option that nothing reads (a typo would be ignored silently)."""
    known = _known_groups(conf)
    for path in files:
        for group, option in _file_options(path):
            if group not in known:
                hint = _did_you_mean(group, known, "[{}]")
                raise ConfigError(f"unknown section [{group}] in {path}: the TTP reads no "
                                  f"such section{hint}; fix or remove it")
            if option and option not in known[group]:
                hint = _did_you_mean(option, known[group], "{}")
                raise ConfigError(f"unknown option '{option}' in section [{group}] of {path}"
                                  f"{hint}; the options are listed in {SAMPLE}")


def _did_you_mean(word: str, candidates, template: str) -> str:
    close = difflib.get_close_matches(word, sorted(candidates), n=1)
    return f" (did you mean {template.format(close[0])}?)" if close else ""


def check_values(conf: cfg.ConfigOpts) -> None:
    """Read every option once, so a value of the wrong type fails now, naming it."""
    for name in conf:
        value = _read(conf, "DEFAULT", name)
        if isinstance(value, cfg.ConfigOpts.GroupAttr):
            for option in value:
                _read(value, name, option)


def _read(source: object, group: str, option: str) -> object:
    try:
        return getattr(source, option)
    except (cfg.ConfigFileValueError, ValueError) as exc:
        text = str(exc)
        source_file = re.search(r"detail='([^']*)'", text)
        where = f" in {source_file.group(1)}" if source_file else ""
        reason = text.rsplit(" is not valid: ", 1)[-1]
        raise ConfigError(f"[{group}] {option}{where} is not valid: {reason}; see its help "
                          f"in {SAMPLE}") from None


def check_database_url(url: str) -> None:
    """The URL parses, its driver is installed, an SQLite file's directory exists."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError
    try:
        parsed = make_url(url)
        dialect = parsed.get_dialect()
    except NoSuchModuleError:  # a subclass of ArgumentError
        raise ConfigError(f"[database] connection: database type {parsed.drivername!r} is "
                          "not supported: use sqlite, postgresql+psycopg2 or "
                          "mysql+pymysql") from None
    except (ArgumentError, ValueError):
        raise ConfigError("[database] connection is not an SQLAlchemy URL: write for example "
                          "sqlite:////var/lib/trusted-launch/ttp.sqlite or "
                          "postgresql+psycopg2://USER:PASSWORD@HOST/DB") from None
    backend = parsed.get_backend_name()
    try:
        dialect.import_dbapi()
    except ImportError:
        raise ConfigError(_missing_driver(backend, dialect.driver)) from None
    if backend == "sqlite":
        _check_sqlite_path(parsed.database)


def _missing_driver(backend: str, driver: str) -> str:
    installed = [name for name in _DRIVERS.get(backend, ()) if _importable(_DRIVER_MODULES[name])]
    fix = (f"write {backend}+{installed[0]}:// (installed)" if installed
           else f"install the Python package of the {driver} driver")
    return (f"[database] connection: the {backend} driver {driver!r} is not installed "
            f"(a {backend}:// URL without +DRIVER means {driver}): {fix}")


def _importable(module: str) -> bool:
    import importlib.util
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False


def _check_sqlite_path(database: str | None) -> None:
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    directory = pathlib.Path(database).expanduser().absolute().parent
    if not directory.is_dir():
        raise ConfigError(f"[database] connection: the directory {directory} of the SQLite "
                          f"file does not exist: create it (mkdir -p {directory}) or point "
                          "the URL elsewhere")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ConfigError(f"[database] connection: the directory {directory} of the SQLite "
                          "file is not writable by this user: run as the TTP's service user "
                          "or fix its permissions")


def check_server_files(conf: cfg.ConfigOpts) -> None:
    """The TLS certificate, key and client CA, and the EK CA files, exist and load."""
    api = conf.api
    for option in ("cert_file", "key_file"):
        if not getattr(api, option):
            raise ConfigError(f"[api] {option} is not set: the TTP serves HTTPS only; set "
                              "[api] cert_file and key_file (PEM) in the configuration file")
    for option in ("cert_file", "key_file", "client_ca_file"):
        _check_readable(getattr(api, option), f"[api] {option}")
    for path in conf.enrollment.ek_ca_files:
        _check_readable(path, "[enrollment] ek_ca_files")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(api.cert_file, api.key_file)
    except ssl.SSLError as exc:
        raise ConfigError(f"[api] cert_file {api.cert_file} and key_file {api.key_file} are "
                          f"not a PEM certificate and its private key ({exc.reason}): "
                          "see doc/operator-guide.md") from None
    if api.client_ca_file:
        try:
            context.load_verify_locations(cafile=api.client_ca_file)
        except ssl.SSLError as exc:
            raise ConfigError(f"[api] client_ca_file {api.client_ca_file} holds no PEM CA "
                              f"certificate ({exc.reason})") from None


def _check_readable(path: str | None, option: str) -> None:
    if not path:
        return
    if not os.path.isfile(path):
        raise ConfigError(f"{option} {path}: no such file; create it or correct {option} "
                          "in the configuration file")
    if not os.access(path, os.R_OK):
        raise ConfigError(f"{option} {path} is not readable by this user: run as the TTP's "
                          "service user or fix the file's permissions")
