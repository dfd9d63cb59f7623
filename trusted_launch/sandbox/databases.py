"""Throw-away databases on the local PostgreSQL and MariaDB servers."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator

PG_ADMIN = dict(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
MYSQL_ADMIN = dict(host="127.0.0.1", port=3306, user="root", password="")


class DatabaseUnavailable(Exception):
    """The database server is not reachable."""


@contextlib.contextmanager
def postgres_database(prefix: str = "ttp_test") -> Iterator[str]:
    """A fresh, uniquely named PostgreSQL database URL, dropped afterwards."""
    import psycopg2

    try:
        admin = psycopg2.connect(connect_timeout=3, **PG_ADMIN)
    except psycopg2.OperationalError as exc:
        raise DatabaseUnavailable(f"PostgreSQL on 127.0.0.1:5432 not reachable: {exc}") from None
    admin.autocommit = True
    name = f"{prefix}_{secrets.token_hex(6)}"
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


@contextlib.contextmanager
def mysql_database(prefix: str = "ttp_test") -> Iterator[str]:
    """A fresh, uniquely named MariaDB/MySQL database URL, dropped afterwards."""
    import pymysql

    try:
        admin = pymysql.connect(connect_timeout=3, autocommit=True, **MYSQL_ADMIN)
    except pymysql.err.OperationalError as exc:
        raise DatabaseUnavailable(f"MariaDB on 127.0.0.1:3306 not reachable: {exc}") from None
    name = f"{prefix}_{secrets.token_hex(6)}"
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
    try:
        yield f"mysql+pymysql://root@127.0.0.1:3306/{name}?charset=utf8mb4"
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.close()
