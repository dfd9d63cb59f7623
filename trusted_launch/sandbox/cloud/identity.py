"""Keystone's projects, users, service catalog and the clouds.yaml that names them.

Idempotent: every object is looked up before it is created.
"""

from __future__ import annotations

import pathlib

import yaml

from trusted_launch.sandbox.cloud.configs import REGION
from trusted_launch.sandbox.cloud.layout import CloudState
from trusted_launch.ttp.keystore import write_private_file

ADMIN_CLOUD = "tl-admin"
DEMO_CLOUD = "tl-demo"
SERVICE_USERS = ("glance", "placement", "nova", "neutron")
# (service name, type, port key, URL path)
CATALOG = (("glance", "image", "glance", ""), ("placement", "placement", "placement", ""),
           ("nova", "compute", "nova", "/v2.1"), ("neutron", "network", "neutron", ""))


def _auth(state: CloudState, user: str, project: str) -> dict:
    return {"auth_url": state.url("keystone", "/v3"), "username": user,
            "password": state.passwords[user], "project_name": project,
            "user_domain_name": "Default", "project_domain_name": "Default"}


def write_clouds_yaml(path: pathlib.Path, state: CloudState) -> None:
    """An admin and a demo (tenant) cloud entry, readable by the owner only."""
    clouds = {name: {"auth": _auth(state, user, user), "region_name": REGION,
                     "identity_api_version": 3, "interface": "public"}
              for name, user in ((ADMIN_CLOUD, "admin"), (DEMO_CLOUD, "demo"))}
    write_private_file(path, yaml.safe_dump({"clouds": clouds}).encode())


def ensure_catalog(conn, state: CloudState) -> None:
    """Projects service and demo, their users and roles, and the service catalog."""
    identity = conn.identity
    service_project = _find_or_create(identity.find_project, identity.create_project,
                                      "service", domain_id="default")
    demo_project = _find_or_create(identity.find_project, identity.create_project,
                                   "demo", domain_id="default")
    roles = {name: _find_or_create(identity.find_role, identity.create_role, name)
             for name in ("admin", "member", "service")}
    demo = _ensure_user(conn, "demo", state.passwords["demo"], demo_project)
    identity.assign_project_role_to_user(demo_project, demo, roles["member"])
    for name in SERVICE_USERS:
        user = _ensure_user(conn, name, state.passwords["service"], service_project)
        for role in ("admin", "service"):
            identity.assign_project_role_to_user(service_project, user, roles[role])
    for name, kind, port_key, path in CATALOG:
        service = identity.find_service(name) or identity.create_service(name=name, type=kind)
        existing = {endpoint.interface for endpoint in identity.endpoints(service_id=service.id)}
        for interface in ("public", "internal"):
            if interface not in existing:
                identity.create_endpoint(service_id=service.id, interface=interface,
                                         url=state.url(port_key, path), region_id=REGION)


def _find_or_create(find, create, name: str, **attrs):
    return find(name, ignore_missing=True) or create(name=name, **attrs)


def _ensure_user(conn, name: str, password: str, project):
    user = conn.identity.find_user(name, ignore_missing=True)
    if user is None:
        return conn.identity.create_user(name=name, password=password, domain_id="default",
                                         default_project_id=project.id)
    return conn.identity.update_user(user, password=password)
