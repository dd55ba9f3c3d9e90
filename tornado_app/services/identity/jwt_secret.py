"""The generated JWT secret, kept in the database (``setting`` row ``jwt_secret``) as the VAPID key is.

Without ``--jwt-secret`` / ``JWT_SECRET`` the first process to start generates a secret
and stores it; every process and host on the same database then signs and checks tokens
with it, whatever folder it was started from. Earlier versions kept the generated secret in
a file, ``.squall_jwt_secret`` beside the SQLite file or in the working directory (PostgreSQL):
when the database has no secret yet and that file exists, its secret is imported, so
existing sessions survive the upgrade. After that the file is no longer read.
"""
from __future__ import annotations

import os
import secrets
from typing import Optional, Tuple

from models import Setting

SETTING = "jwt_secret"
LEGACY_FILE = ".squall_jwt_secret"


def legacy_secret_path(sqlite_path: Optional[str]) -> Optional[str]:
    """Where earlier versions kept a generated secret: beside the SQLite file, else the working directory."""
    if sqlite_path == ":memory:":
        return None
    folder = os.path.dirname(os.path.abspath(sqlite_path)) if sqlite_path else os.getcwd()
    return os.path.join(folder, LEGACY_FILE)


def stored_secret(legacy_path: Optional[str]) -> Tuple[str, bool]:
    """``(secret, imported from legacy_path)``: the database's secret, created once. Writer thread.

    Processes starting together may both try to create it; the first insert wins and
    every process reads that one back.
    """
    row = Setting.get_or_none(Setting.key == SETTING)
    if row is not None:
        return row.value, False
    legacy = None
    if legacy_path and os.path.isfile(legacy_path):
        with open(legacy_path) as f:
            legacy = f.read().strip() or None
    Setting.insert(key=SETTING, value=legacy or secrets.token_urlsafe(48)).on_conflict_ignore().execute()
    value = Setting.get(Setting.key == SETTING).value
    return value, legacy is not None and value == legacy
