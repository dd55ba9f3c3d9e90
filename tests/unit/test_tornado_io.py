"""Tornado's internals in one guarded place (issue 21, item 2; acceptance 1).

- No module outside ``tornado_app/tornado_io.py`` names a private Tornado attribute: the names
  tornado_io relies on, any private name of a Tornado class reached on another object, any
  private name of a Tornado base class reached on ``self`` in a handler or stream subclass, and
  any private function or class of a ``tornado`` module.
- The import-time check refuses an untested Tornado and a Tornado without those names.
- Each patched private method is still called by Tornado, over real sockets.
"""
import ast
import asyncio
import gc
import importlib
import inspect
import pathlib
import re
import subprocess
import sys
import weakref

import pytest
import tornado
import tornado.iostream
import tornado.web
import tornado.websocket

from tornado_app import tornado_io
from tornado_app.tasks import running_tasks
from tests.support.clients import SSEClient
from tests.support.streams import wait_until

ROOT = pathlib.Path(__file__).resolve().parents[2]
TORNADO_DIR = pathlib.Path(tornado.__file__).parent
GUARDED = ROOT / "tornado_app" / "tornado_io.py"
# Underscore names of the standard library that are public API (namedtuple, os).
STDLIB_PUBLIC = frozenset({"_exit", "_replace", "_asdict", "_fields", "_make", "_field_defaults"})


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def tornado_private_names() -> frozenset:
    """Every private attribute, method and module-level name Tornado's own source uses."""
    names = set()
    for path in TORNADO_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and _private(node.attr):
                names.add(node.attr)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and _private(node.name):
                names.add(node.name)
    return frozenset(names - STDLIB_PUBLIC)


def class_private_names(cls) -> frozenset:
    """The private names a Tornado class (its own source) defines or uses on ``self``."""
    try:
        tree = ast.parse(inspect.getsource(cls))
    except (OSError, TypeError):
        return frozenset(name for name in vars(cls) if _private(name))
    names = {name for name in vars(cls) if _private(name)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr) and isinstance(node.value, ast.Name) \
                and node.value.id == "self":
            names.add(node.attr)
    return frozenset(names)


def scan(source: str, where: str, tornado_names: frozenset, subclass_names: dict) -> list:
    """Uses of private Tornado names in ``source``.

    ``subclass_names`` maps a class name defined in ``source`` to the private names of its
    Tornado bases: ``self.<one of them>`` inside that class is a use too.
    """
    found = []
    guarded = tornado_io.PRIVATE_NAMES
    tree = ast.parse(source)

    def hit(node, what):
        found.append(f"{where}:{node.lineno}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "tornado":
            for alias in node.names:
                if _private(alias.name):
                    hit(node, f"imports tornado's private {alias.name}")
        elif isinstance(node, ast.Attribute):
            root = node
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id == "tornado" and _private(node.attr):
                hit(node, f"tornado module private {node.attr}")
            elif node.attr in guarded:
                hit(node, f"names {node.attr} (only tornado_io may)")
            elif node.attr in tornado_names and not (isinstance(node.value, ast.Name)
                                                     and node.value.id in ("self", "cls")):
                hit(node, f"reaches Tornado's private {node.attr} on another object")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in guarded:
            hit(node, f"overrides {node.name} (only tornado_io may)")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in guarded:
            hit(node, f"spells {node.value!r} (only tornado_io may)")
    for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name in subclass_names):
        private = subclass_names[cls.name]
        for node in ast.walk(cls):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self" \
                    and node.attr in private:
                hit(node, f"{cls.name} reaches its Tornado base's private {node.attr}")
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in private:
                hit(node, f"{cls.name} overrides its Tornado base's private {node.name}")
    return found


def project_modules():
    """``(path, module name)`` of every module in tornado_app/, handlers/ and run.py."""
    paths = sorted((ROOT / "tornado_app").rglob("*.py")) + sorted((ROOT / "handlers").rglob("*.py"))
    paths.append(ROOT / "run.py")
    for path in paths:
        rel = path.relative_to(ROOT).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        yield path, ".".join(parts)


def tornado_subclasses(module) -> dict:
    """Class name -> private names of its Tornado bases, for classes of ``module`` and the mixins
    of ours they combine with (a mixin's methods run on the Tornado object too)."""
    result = {}
    for obj in vars(module).values():
        if not inspect.isclass(obj) or obj.__module__ != module.__name__:
            continue
        bases = [c for c in obj.__mro__ if c.__module__.split(".")[0] == "tornado"]
        if not bases:
            continue
        private = frozenset().union(*(class_private_names(c) for c in bases))
        for ours in obj.__mro__:
            if ours.__module__.split(".")[0] != "tornado" and ours is not object:
                result.setdefault((ours.__module__, ours.__name__), set()).update(private)
    return result


def test_no_module_outside_tornado_io_names_a_private_tornado_attribute():
    names = tornado_private_names()
    per_class = {}
    modules = list(project_modules())
    for _, name in modules:
        if name != "run":
            for key, private in tornado_subclasses(importlib.import_module(name)).items():
                per_class.setdefault(key, set()).update(private)
    found = []
    for path, name in modules:
        if path == GUARDED:
            continue
        subclass_names = {cls: frozenset(private) for (mod, cls), private in per_class.items() if mod == name}
        found += scan(path.read_text(), str(path.relative_to(ROOT)), names, subclass_names)
    assert found == [], "\n".join(found)


def test_tornado_io_itself_uses_every_name_it_checks():
    """The check list is the list of names the module uses: nothing used goes unchecked."""
    tree = ast.parse(GUARDED.read_text())
    used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and _private(n.attr)}
    used |= {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
             and _private(n.name)}
    tornado_used = used & tornado_private_names()
    assert tornado_used <= tornado_io.PRIVATE_NAMES | {"_accept_connection", "_handle_events"}, \
        tornado_used - tornado_io.PRIVATE_NAMES
    assert tornado_io.PRIVATE_NAMES - {"_StreamBuffer"} <= used


@pytest.mark.parametrize("source, expected", [
    ("def f(stream):\n    stream._write_buffer._buffers = None\n", "_write_buffer"),
    ("def f(conn):\n    conn._abort()\n", "_abort"),
    ("def f(h):\n    return h._reason\n", "_reason"),
    ("def f(stream):\n    return stream._read_buffer\n", "_read_buffer"),
    ("from tornado.iostream import _StreamBuffer\n", "_StreamBuffer"),
    ("import tornado.web\nx = tornado.web._has_stream_request_body\n", "_has_stream_request_body"),
    ("class H:\n    def f(self):\n        return self._finished\n", "_finished"),
    ("class H:\n    async def _receive_frame_loop(self):\n        pass\n", "_receive_frame_loop"),
    ("getattr(stream, '_write_futures')\n", "_write_futures"),
])
def test_the_scan_finds_each_kind_of_use(source, expected):
    """The grep fails when it should: each kind of use it looks for, planted in a module."""
    found = scan(source, "planted.py", tornado_private_names(),
                 {"H": class_private_names(tornado.web.RequestHandler)
                  | class_private_names(tornado.websocket.WebSocketProtocol13)})
    assert any(expected in line for line in found), found


def test_the_scan_lets_our_own_private_names_be():
    source = ("class Service:\n    def f(self, other):\n        self._closed = True\n"
              "        return self._queue, os._exit, config._replace()\n")
    assert scan(source, "ours.py", tornado_private_names(), {}) == []


# The version check -------------------------------------------------------------------------

def test_the_pinned_tornado_is_a_tested_version():
    pin = re.search(r"^tornado==([0-9.]+)$", (ROOT / "requirements.txt").read_text(), re.M).group(1)
    assert tuple(int(p) for p in pin.split(".")) in tornado_io.TESTED_VERSIONS
    assert tuple(tornado.version_info[:3]) in tornado_io.TESTED_VERSIONS
    tornado_io.check_tornado()  # the running one passes


def test_an_untested_tornado_version_is_refused_with_a_clear_error(monkeypatch):
    monkeypatch.setattr(tornado, "version_info", (6, 7, 0, 0))
    with pytest.raises(RuntimeError) as raised:
        tornado_io.check_tornado()
    message = str(raised.value)
    assert "Tornado 6.6.1" in message and "Tornado 6.7.0" in message
    assert "Upgrading Tornado" in message and "requirements.txt" in message


def test_a_missing_private_method_is_refused_by_name(monkeypatch):
    monkeypatch.delattr(tornado.iostream.BaseIOStream, "_handle_write")
    with pytest.raises(RuntimeError, match=r"BaseIOStream\._handle_write exists"):
        tornado_io.check_tornado()


def test_a_renamed_instance_attribute_is_refused_by_name(monkeypatch):
    """Instance attributes are found where Tornado sets them: a rename upstream is caught."""
    def clear(self):
        self._response_headers = {}
        self._reason = "OK"
    monkeypatch.setattr(tornado.web.RequestHandler, "clear", clear)
    with pytest.raises(RuntimeError, match=r"RequestHandler\.clear sets _headers"):
        tornado_io.check_tornado()


def test_importing_under_an_untested_tornado_fails_at_import():
    """The real import: the server does not start on a Tornado the patches were not written for."""
    code = "import tornado; tornado.version_info = (7, 0, 0, 0); import tornado_app.tornado_io"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "RuntimeError" in proc.stderr and "Tornado 7.0.0" in proc.stderr and "Upgrading Tornado" in proc.stderr
    ok = subprocess.run([sys.executable, "-c", "import handlers, tornado_app.application"], cwd=ROOT,
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr


# Still called: each patch over real sockets -------------------------------------------------

def _ws_handler(services, transport="ws_notifications"):
    (conn,) = [c for c in services.registry.connections if c.transport == transport]
    return conn.wire  # the handler is the connection's transport


@pytest.mark.gen_test(timeout=60)
async def test_write_queues_exist_only_while_something_is_queued(users, ws_connect, services):
    """``LeanIOStream._handle_write`` is still called by Tornado: once a large write has left,
    the stream's queues are gone again (without the call they would stay)."""
    (alice,) = await users("alice")
    ws = await ws_connect("/ws/notifications", alice["token"])
    await ws.recv_type("unread")
    await wait_until(lambda: services.registry.count() == 1)
    handler = _ws_handler(services)
    stream = handler.ws_connection.stream
    assert isinstance(stream, tornado_io.LeanIOStream)
    assert tornado_io.write_queues_released(stream)  # idle: no queues
    before = tornado_io.PATCH_CALLS["_handle_write"]
    payload = '"' + "x" * (9 << 20) + '"'  # far more than the kernel takes at once
    written = handler.write_message(payload)
    assert not written.done()
    assert not tornado_io.write_queues_released(stream)  # queued: real queues
    assert len(await ws.conn.read_message()) == len(payload)
    await asyncio.wait_for(written, 30)
    assert tornado_io.PATCH_CALLS["_handle_write"] > before
    assert tornado_io.write_queues_released(stream)


@pytest.mark.gen_test(timeout=60)
async def test_the_websocket_frame_loop_runs_in_a_task_of_its_own(users, ws_connect, services):
    """``DetachedLoopProtocol._receive_frame_loop`` is still called: the upgrade request's
    coroutine has ended once the socket is open, and frames are still read."""
    (alice,) = await users("alice")
    before = tornado_io.PATCH_CALLS["_receive_frame_loop"]
    ws = await ws_connect("/ws/notifications", alice["token"])
    await ws.recv_type("unread")
    assert tornado_io.PATCH_CALLS["_receive_frame_loop"] == before + 1
    assert [t for t in running_tasks() if t.get_name() == "ws.frames"]

    def upgrade_requests():
        return [t for t in asyncio.all_tasks() if "_execute" in getattr(t.get_coro(), "__qualname__", "")]
    await wait_until(lambda: not upgrade_requests(), what="the upgrade request to end")
    await ws.send("not json")
    assert (await ws.recv_type("error"))["code"] == "bad_json"  # frames still read


@pytest.mark.gen_test(timeout=60)
async def test_an_ended_frame_loop_aborts_the_connection(users, ws_connect, services):
    """What ends the detached loop closes the socket (``_abort``), as Tornado's own path would."""
    (alice,) = await users("alice")
    before = running_tasks()  # an earlier test's socket may still be closing: not this one's loop
    ws = await ws_connect("/ws/notifications", alice["token"])
    await ws.recv_type("unread")
    (loop,) = [t for t in running_tasks() - before if t.get_name() == "ws.frames"]
    loop.cancel()
    assert await ws.conn.read_message() is None  # the server closed the socket
    await wait_until(lambda: not services.registry.user_connections(alice["id"]),
                     what="the connection to unregister")


@pytest.mark.gen_test(timeout=60)
async def test_response_headers_are_dropped_from_an_open_stream(users, http_port, services):
    """``drop_response_headers`` empties what Tornado's ``set_header`` writes to, once a stream is live."""
    (alice,) = await users("alice")
    sse = await SSEClient.connect("127.0.0.1", http_port, "/sse/notifications", alice["token"])
    await sse.next_type("unread")
    await wait_until(lambda: services.registry.count() == 1)
    (handler,) = [conn.wire for conn in services.registry.connections]
    assert len(tornado_io.response_headers(handler)) == 0  # the stream's were dropped
    handler.set_header("X-Probe", "1")
    assert tornado_io.response_headers(handler)["X-Probe"] == "1"
    tornado_io.drop_response_headers(handler)
    assert len(tornado_io.response_headers(handler)) == 0
    sse.close()


@pytest.mark.gen_test(timeout=60)
async def test_an_ended_sse_stream_is_freed_without_the_cycle_collector(users, http_port, services):
    """``break_handler_cycles`` still breaks the handler's cycle: once its stream ends, the
    handler of a detached SSE stream is freed by reference counting alone."""
    (alice,) = await users("alice")
    sse = await SSEClient.connect("127.0.0.1", http_port, "/sse/notifications", alice["token"])
    await sse.next_type("unread")
    await wait_until(lambda: services.registry.count() == 1)
    (handler,) = [conn.wire for conn in services.registry.connections]
    assert handler.ui is None
    gone = weakref.ref(handler)
    del handler
    gc.collect()
    gc.disable()
    try:
        sse.close()
        await wait_until(lambda: services.registry.count() == 0, what="the stream to unregister")
        await wait_until(lambda: gone() is None, what="the handler to be freed without gc")
    finally:
        gc.enable()
