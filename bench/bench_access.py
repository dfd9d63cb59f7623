"""Cost of authentication and authorization per TTP request, beside a whole request.

In one process on a SQLite database: ``TTPApplication.authorize`` for an
anonymous caller of a public route, for a host token on its own continuous
attestation route (the token lookup cached per worker, as in service), and
for a host token looked up in the database every time (cache expired); the
baseline is a whole ``GET /v1/keys`` through the WSGI application, which
includes one public authorization. Best of several rounds.
"""

from __future__ import annotations

import pathlib
import tempfile
import time

import webob

ROUNDS = 5
CALLS = 2000


def _best_us(call, calls: int = CALLS) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(calls):
            call()
        best = min(best, (time.perf_counter() - started) / calls)
    return round(best * 1e6, 1)


def _config(directory: pathlib.Path) -> pathlib.Path:
    from trusted_launch.sandbox.pki import CertificateAuthority
    from trusted_launch.sandbox.ttp_process import write_ttp_config
    ca = CertificateAuthority(directory / "pki")
    cert, key = ca.issue("bench-access")
    return write_ttp_config(directory, database_url=f"sqlite:///{directory / 'ttp.sqlite'}",
                            cert=cert, key=key, admin_token="bench-admin",
                            ek_ca_files=[ca.cert_file])


def run() -> dict:
    from trusted_launch.ttp.auth import TOKEN_CACHE_SECONDS, new_token
    from trusted_launch.ttp.db.migration import db_sync
    from trusted_launch.ttp.wsgi import load_config, make_app

    with tempfile.TemporaryDirectory() as tmp:
        directory = pathlib.Path(tmp)
        conf = load_config([str(_config(directory))])
        db_sync(conf.database.connection)
        from trusted_launch.ttp.keystore import TokenKeyStore
        TokenKeyStore(conf.key_store.key_dir, conf.key_store.rotation_overlap).ensure_current()
        app = make_app(conf)
        try:
            _, token = new_token(app.access.store, "host", "bench-host", None)
            anonymous = webob.Request.blank("/v1/hosts")
            host = webob.Request.blank("/v1/hosts/bench-host/challenges",
                                       headers={"X-Auth-Token": token})
            target = {"host": "bench-host"}
            authenticator = app.access.authenticator
            clock = [0.0]
            authenticator.clock = lambda: clock[0]

            def uncached() -> None:
                clock[0] += TOKEN_CACHE_SECONDS  # every lookup goes to the database
                app.authorize(host, "ttp:hosts:challenge", target)

            keys = webob.Request.blank("/v1/keys")
            return {
                "authz_public_us": _best_us(
                    lambda: app.authorize(anonymous, "ttp:hosts:enroll", {})),
                "authz_host_token_us": _best_us(
                    lambda: app.authorize(host, "ttp:hosts:challenge", target)),
                "authz_host_token_uncached_us": _best_us(uncached, CALLS // 4),
                "baseline_wsgi_keys_us": _best_us(lambda: keys.get_response(app)),
            }
        finally:
            app.db.dispose()


if __name__ == "__main__":
    print(run())
