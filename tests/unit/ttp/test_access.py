"""Authentication sources and the policy defaults, in process on a real SQLite database."""

from __future__ import annotations

import pathlib
import re

import pytest
from oslo_config import cfg
from oslo_policy import opts as policy_opts

from trusted_launch.ttp import policies
from trusted_launch.ttp.auth import (
    TOKEN_CACHE_SECONDS,
    Authenticator,
    Authorizer,
    Principal,
    new_token,
    token_hash,
)
from trusted_launch.ttp.db.access import AccessStore
from trusted_launch.ttp.db.api import TTPDatabase
from trusted_launch.ttp.db.migration import db_sync
from trusted_launch.ttp.errors import BadRequest, Forbidden, Unauthorized

ROOT = pathlib.Path(__file__).resolve().parents[3]
KEYSTONE_READER = {"HTTP_X_IDENTITY_STATUS": "Confirmed", "HTTP_X_ROLES": "member,Reader",
                   "HTTP_X_USER_ID": "u1"}


@pytest.fixture
def store(tmp_path: pathlib.Path):
    url = f"sqlite:///{tmp_path / 'ttp.sqlite'}"
    db_sync(url)
    db = TTPDatabase(url)
    yield AccessStore(db)
    db.dispose()


def test_keystone_headers_count_only_behind_keystonemiddleware(store) -> None:
    assert Authenticator(store).authenticate(KEYSTONE_READER).anonymous  # a client's forgery
    principal = Authenticator(store, keystone=True).authenticate(KEYSTONE_READER)
    assert principal.roles == {"reader"} and principal.label == "keystone:u1"
    admin = {**KEYSTONE_READER, "HTTP_X_ROLES": "admin,host"}  # no host role from Keystone
    assert Authenticator(store, keystone=True).authenticate(admin).roles == {"admin"}


def test_client_certificate_names_a_host_only_when_configured(store) -> None:
    environ = {"SSL_CLIENT_S_DN_CN": "cmp-1"}
    assert Authenticator(store).authenticate(environ).anonymous
    principal = Authenticator(store, mtls_host_identity=True).authenticate(environ)
    assert (principal.roles, principal.host) == ({"host"}, "cmp-1")
    odd = {"SSL_CLIENT_S_DN_CN": "not a host name"}
    assert Authenticator(store, mtls_host_identity=True).authenticate(odd).anonymous


def test_tokens_are_stored_as_hashes_and_revocable(store) -> None:
    record, token = new_token(store, "host", "cmp-1", "rack 4")
    assert store.token(token_hash(token)).host == "cmp-1"
    now = [0.0]
    authenticator = Authenticator(store, clock=lambda: now[0])
    principal = authenticator.authenticate({"HTTP_X_AUTH_TOKEN": token})
    assert principal == Principal(frozenset({"host"}), "cmp-1", f"token:{record.id}")
    assert store.revoke_token(record.id)
    assert authenticator.authenticate({"HTTP_X_AUTH_TOKEN": token}) == principal  # cached
    now[0] = TOKEN_CACHE_SECONDS
    with pytest.raises(Unauthorized) as refused:
        authenticator.authenticate({"HTTP_X_AUTH_TOKEN": token})
    assert refused.value.check == "invalid_token" and token not in str(refused.value)


@pytest.mark.parametrize(("role", "host", "check"), [
    ("root", None, "role"), ("host", None, "host"), ("reader", "cmp-1", "host"),
    ("host", "bad name!", "host")])
def test_token_requests_are_checked(store, role, host, check) -> None:
    with pytest.raises(BadRequest) as refused:
        new_token(store, role, host, None)
    assert refused.value.check == check


def test_operator_policy_file_overrides_a_default(tmp_path: pathlib.Path) -> None:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text('"ttp:profiles:list": "rule:reader"\n')
    conf = cfg.ConfigOpts()
    policy_opts.set_defaults(conf, policy_file=str(policy_file))
    conf([], default_config_files=[])
    authorizer = Authorizer(conf)
    with pytest.raises(Unauthorized):
        authorizer.check("ttp:profiles:list", {}, Principal())
    authorizer.check("ttp:profiles:list", {}, Principal(frozenset({"reader"}), label="t"))
    with pytest.raises(Forbidden) as refused:
        authorizer.check("ttp:no:such:rule", {}, Principal(frozenset({"admin"}), label="t"))
    assert refused.value.check == "policy_missing"


def test_the_policy_sample_is_current() -> None:
    sample = (ROOT / "etc" / "trusted-launch-ttp-policy.yaml.sample").read_text()
    written = dict(re.findall(r'^#"([^"]+)": "([^"]*)"$', sample, re.MULTILINE))
    assert written == {rule.name: rule.check_str for rule in policies.list_rules()}, \
        "etc/trusted-launch-ttp-policy.yaml.sample is stale: run tox -e genpolicy"
