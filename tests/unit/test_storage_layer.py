"""Storage has a layer of its own (issue 21, item 4): each aggregate's SQL lives in its store.

A *store* is a module named ``store.py`` or ``*_store.py`` (``chat/store.py``,
``chat/group_store.py``, ``chat/history_store.py``, ``chat/change_store.py``,
``delivery/notification_store.py``, ``delivery/preference_store.py``,
``identity/session_store.py``, ``outbound/webhook_store.py``); ``storage/`` holds the shared
fast SQL paths and the database executor, and the brokers (``delivery/broker/``) speak their
own protocols (PostgreSQL ``LISTEN``/``NOTIFY``). Every other module under
``tornado_app/services`` is a *service module*: it orchestrates, and calls a store for the
database work. Two rules, read from the source (ast), so they hold for code not written yet:

1. no service module holds SQL text (outside docstrings) nor runs a statement itself
   (``execute_sql``, ``Model.raw``, psycopg2's ``execute_values``);
2. no service module of ``chat/``, ``identity/`` or ``delivery/`` builds a Peewee query on a
   model whose aggregate has a store (``STORED``), but those listed in ``NOT_YET`` with the reason.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "run.py").exists())
SERVICES = ROOT / "tornado_app" / "services"

# Models whose aggregate has a store, and that store.
STORED = {
    "Chat": "chat/group_store.py", "ChatMember": "chat/group_store.py",
    "ChatDeparture": "chat/group_store.py", "Message": "chat/store.py", "Reaction": "chat/change_store.py",
    "Notification": "delivery/notification_store.py", "NotificationState": "delivery/notification_store.py",
    "RefreshToken": "identity/session_store.py", "UserPreference": "delivery/preference_store.py",
}
# Peewee's query builders and row fetchers, called on a model class.
QUERIES = {"select", "update", "insert", "insert_many", "insert_from", "replace", "delete", "delete_by_id",
           "get", "get_or_none", "get_by_id", "get_or_create", "create", "bulk_create", "bulk_update", "raw"}
# (service module, model): queries not moved to the model's store yet, and why.
NOT_YET = {
    # uploads: an upload's own aggregate (the ``upload`` table) has no database store yet; its
    # checks read the first message of a resend and the membership of the upload's chat. They
    # cannot call the chat's stores as they are (those import uploads.py: the message's
    # attachments): they move with the upload queries into an uploads store of their own.
    ("chat/uploads.py", "Message"), ("chat/uploads.py", "ChatMember"),
}
PACKAGES_WITH_STORES = ("chat", "identity", "delivery")
SQL_TEXT = re.compile(r"\b(SELECT\s.+\sFROM|INSERT\s+INTO|UPDATE\s+\S+\s+SET|DELETE\s+FROM|SELECT\s+1)\b", re.S)
RUNS_SQL = {"execute_sql", "raw", "execute_values"}


def is_store(rel: str) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return name == "store.py" or name.endswith("_store.py")


def service_modules():
    for path in sorted(SERVICES.rglob("*.py")):
        rel = path.relative_to(SERVICES).as_posix()
        if is_store(rel) or rel.startswith("storage/") or rel.startswith("delivery/broker/"):
            continue
        yield rel, ast.parse(path.read_text(encoding="utf-8"))


def docstrings(tree: ast.AST) -> set:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def sql_found(tree: ast.AST) -> list:
    skip = docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            if SQL_TEXT.search(node.value):
                found.append(f"line {node.lineno}: SQL text {node.value[:40]!r}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in RUNS_SQL:
            found.append(f"line {node.lineno}: .{node.func.attr}(...)")
    return found


def model_queries(tree: ast.AST) -> list:
    """``(line, model, method)`` of each ``Model.select(...)``-like call on a model in ``STORED``."""
    found = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in QUERIES
                and isinstance(node.func.value, ast.Name) and node.func.value.id in STORED):
            found.append((node.lineno, node.func.value.id, node.func.attr))
    return found


def test_no_service_module_holds_sql_text_or_runs_a_statement():
    offenders = [f"{rel} {what}" for rel, tree in service_modules() for what in sql_found(tree)]
    assert offenders == [], "SQL outside the stores and storage/:\n" + "\n".join(offenders)


def test_service_modules_leave_the_queries_of_stored_aggregates_to_their_stores():
    offenders, used = [], set()
    for rel, tree in service_modules():
        if not rel.startswith(PACKAGES_WITH_STORES):
            continue
        for line, model, method in model_queries(tree):
            if (rel, model) in NOT_YET:
                used.add((rel, model))
                continue
            offenders.append(f"{rel}:{line} {model}.{method}(...): belongs in {STORED[model]}")
    assert offenders == [], "Peewee queries outside their aggregate's store:\n" + "\n".join(offenders)
    # an entry of NOT_YET that no longer matches anything must go (the list only shrinks)
    assert used == NOT_YET, f"stale NOT_YET entries: {sorted(NOT_YET - used)}"


def test_the_rules_see_what_they_forbid():
    """The detectors find each kind of offence (a rule that finds nothing proves nothing)."""
    sample = ast.parse('''
def load(db, chat_id):
    """SELECT * FROM docstrings is prose."""
    db.execute_sql("SELECT 1")
    rows = Message.select().where(Message.chat == chat_id)
    ChatMember.update(unread_count=0).execute()
    text = f"DELETE FROM message WHERE id = {chat_id}"
    cache.get(chat_id)
    User.select()
''')
    sql = sql_found(sample)
    assert any("execute_sql" in s for s in sql) and any("SELECT 1" in s for s in sql)
    assert any("DELETE FROM" in s for s in sql)
    assert not any("docstrings" in s for s in sql)
    assert [(m, q) for _, m, q in model_queries(sample)] == [("Message", "select"), ("ChatMember", "update")]


def test_every_store_named_exists():
    for store in set(STORED.values()):
        assert (SERVICES / store).exists(), store


def test_one_storage_path_stores_messages():
    """Rows of ``message`` are inserted in two places only: ``chat/store.py`` (every message: the
    group commit's sends and the system messages of group changes, through ``store_sends``) and
    ``chat/change_store.py`` (change rows: edits, deletes, reactions, which are events)."""
    inserting = set()
    for path in sorted((ROOT / "tornado_app").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            on_message = (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                          and func.value.id == "Message" and func.attr in QUERIES - {"select", "update", "delete",
                                                                                       "delete_by_id", "get",
                                                                                       "get_or_none", "get_by_id",
                                                                                       "raw"})
            fast_path = (isinstance(func, ast.Name) and func.id in ("insert_returning_ids", "insert_values")
                         and node.args and isinstance(node.args[0], ast.Name) and node.args[0].id == "Message")
            if on_message or fast_path:
                inserting.add(path.relative_to(SERVICES).as_posix() if SERVICES in path.parents else str(path))
    assert inserting == {"chat/store.py", "chat/change_store.py"}, inserting
