"""Services are wired at construction (issue 21, item 3): nothing in the container is optional but
what may truly be absent, and the services built by ``build_services`` are all there (the control
dispatch, built there too, refuses a kind without its handler: tests/unit/test_control.py)."""
from __future__ import annotations

import dataclasses

from tornado_app.config import Config
from tornado_app.services import Services, build_services

# What may be absent, and why: the product's tokens only exist with --auth-mode external|both;
# the HTTP server and the timers and task exist once start() (or a server) made them.
MAY_BE_ABSENT = {"external", "http_server", "_prune_task", "_heartbeat", "_sweeper", "_pinger"}


def optional_fields() -> set:
    # the annotations as written (the module postpones them): "Optional[...]" marks what may be None
    return {field.name for field in dataclasses.fields(Services) if str(field.type).startswith("Optional[")}


def test_only_what_may_be_absent_is_optional():
    assert optional_fields() == MAY_BE_ABSENT


def test_built_services_are_all_there(tmp_path):
    services = build_services(Config(database_url=f"sqlite:///{tmp_path}/wiring.db"))
    try:
        for field in dataclasses.fields(Services):
            if field.name not in MAY_BE_ABSENT:
                assert getattr(services, field.name) is not None, field.name
        assert services.external is None  # builtin auth mode: no product tokens
    finally:
        services.dbx.close()
        services.auth.close()


# Names the services give a connection, its transport or its handler (issue 21, acceptance 3).
CONNECTION_NAMES = {"conn", "connection", "connections", "wire", "transport", "handler", "subscriber",
                    "holder", "sub", "socket", "stream"}


def probes_on_connections(source: str) -> list:
    """``getattr``/``hasattr`` calls whose object is named like a connection, as (line, text)."""
    import ast
    found = []
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr")
                and node.args):
            target = node.args[0]
            name = target.id if isinstance(target, ast.Name) else target.attr if isinstance(target, ast.Attribute) else ""
            if name.lstrip("_") in CONNECTION_NAMES:
                found.append((node.lineno, ast.unparse(node)))
    return found


def test_no_getattr_or_hasattr_probe_on_connections_in_the_services():
    import pathlib
    services = pathlib.Path(__file__).resolve().parents[2] / "tornado_app" / "services"
    probes = {str(path.relative_to(services)): found for path in sorted(services.rglob("*.py"))
              if (found := probes_on_connections(path.read_text()))}
    assert probes == {}, "the Transport protocol and PresenceHolder say what a connection has: " + repr(probes)


def test_the_probe_scan_sees_what_it_forbids():
    assert [text for _, text in probes_on_connections("getattr(conn, 'ping', None)\nhasattr(self.wire, 'x')\n"
                                                      "getattr(message, 'kind')\n")] == \
        ["getattr(conn, 'ping', None)", "hasattr(self.wire, 'x')"]
