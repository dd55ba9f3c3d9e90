"""Attachments (issue 25, item 5): receiving uploads, attaching them to messages, signed links.

Flow: ``POST /api/uploads`` → ``receive`` (size and quota from Content-Length) → ``Receiver``
takes the body chunk by chunk (written to the store's temporary file in a worker thread,
about 1 MiB at a time; the type sniffed from the first bytes, text checked as it streams)
→ ``finish`` (images decoded in a thread for their size and thumbnail, the quota checked
again in the row's transaction) → an ``upload`` row owned by the caller, an orphan.
A send that lists it in ``attachments`` attaches it in the message's own transaction
(``attach``, called by the chat writer). Members of the chat get short-lived signed links
(``link``); ``/files/{id}?exp=&sig=`` checks the signature (``verify``), not a token, so
that an ``<img src>`` works. Orphans older than ``orphan_ttl`` and interrupted uploads'
temporary files are swept every few minutes (``sweep``).
"""
from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import hmac
import logging
import re
import secrets
import time
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, cast

import peewee

from models import ChatMember, Message, Upload, utcnow
from ...errors import Forbidden, NotFound, PayloadTooLarge, UnsupportedMediaType, ValidationError
from ...tasks import spawn
from ..storage.db import DatabaseExecutor
from .media import IMAGE_TYPES, SNIFF_BYTES, ImageInfo, MediaRefused, TextCheck, TEXT, inspect_image, sniff
from .upload_store import PartialUpload, UploadStore

log = logging.getLogger("squall.uploads")

MiB = 1024 * 1024
WRITE_BLOCK = MiB  # bytes gathered before one write in a worker thread (memory per upload in flight)
ID_RE = re.compile(r"^[A-Za-z0-9_-]{22}$")  # secrets.token_urlsafe(16)
MAX_FILENAME = 255
VARIANTS = ("file", "thumb")
NOT_ALLOWED = "Allowed: PNG, JPEG, GIF, WebP, PDF and UTF-8 text"


@dataclass(frozen=True)
class UploadLimits:
    """Limits of uploads (docs/operations.md)."""

    max_bytes: int = 25 * MiB  # --max-upload-bytes
    quota_bytes: int = 1024 * MiB  # --upload-quota-bytes: all of a user's stored uploads
    url_ttl: int = 300  # --upload-url-ttl: seconds a signed link works
    orphan_ttl: float = 24 * 3600.0  # --orphan-upload-ttl: seconds an unattached upload is kept
    max_attachments: int = 10  # per message
    timeout: float = 600.0  # --upload-timeout: seconds an upload's body may take


class AttachmentTaken(ValidationError):
    """An upload listed by a send is already attached (400: the send's body is what is wrong)."""

    code = "attachment_already_used"


def sanitize_filename(raw: Optional[str]) -> str:
    """A display name safe in a header and a page: no path, no control or format characters, ≤ 255.

    Only a label: files are stored under their random id, never under this name.
    """
    name = unicodedata.normalize("NFC", raw or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip().strip(".")
    if len(name) > MAX_FILENAME:
        stem, dot, ext = name.rpartition(".")
        ext = ext if dot and len(ext) <= 16 else ""
        name = (stem if ext else name)[:MAX_FILENAME - len(ext) - 1] + ("." + ext if ext else "")
    return name or "upload"


def attachment_dict(row: Upload) -> dict:
    """The public shape of an attachment (in messages): no owner, no storage keys."""
    return {"id": row.id, "content_type": row.content_type, "size": row.size, "filename": row.filename,
            "width": row.width, "height": row.height}


class Receiver:
    """The body of one upload, received chunk by chunk (one per request; loop side).

    ``feed`` returns an awaitable when a block goes to disk: the handler returns it from
    ``data_received`` so Tornado reads no more until it is written (back-pressure).
    """

    def __init__(self, service: "UploadService", user_id: int, filename: str):
        self.service, self.user_id, self.filename = service, user_id, filename
        self.received = 0
        self.head = b""
        self.content_type: Optional[str] = None
        self.text: Optional[TextCheck] = None
        self._buffer = bytearray()
        self._partial: Optional[PartialUpload] = None
        self.closed = False

    def feed(self, chunk: bytes) -> Optional[asyncio.Future]:
        """Take the next chunk. Raises PayloadTooLarge ``upload_too_large``, UnsupportedMediaType."""
        self.received += len(chunk)
        if self.received > self.service.limits.max_bytes:
            raise PayloadTooLarge(f"Uploads are limited to {self.service.limits.max_bytes} bytes",
                                  "upload_too_large")
        if len(self.head) < SNIFF_BYTES:
            self.head += chunk[:SNIFF_BYTES - len(self.head)]
            if len(self.head) >= SNIFF_BYTES:
                self._sniff()
        elif self.text is not None and not self.text.ok:  # a block already written was not text: stop now
            raise UnsupportedMediaType(NOT_ALLOWED, "unsupported_media_type")
        self._buffer += chunk
        if len(self._buffer) >= WRITE_BLOCK:
            return self._flush()
        return None

    def _sniff(self) -> None:
        try:
            self.content_type = sniff(self.head)
        except MediaRefused as exc:
            raise UnsupportedMediaType(str(exc), exc.code) from None
        if self.content_type is None:
            self.text = TextCheck()

    def _flush(self) -> "asyncio.Future":
        block, self._buffer = bytes(self._buffer), bytearray()
        text = self.text

        def write() -> None:
            if self.closed:
                return
            if self._partial is None:
                self._partial = self.service.store.begin()
            if text is not None:
                text.feed(block)
                if not text.ok:
                    return  # refused at the end; nothing more is kept
            self._partial.write(block)
            if self.closed:  # aborted while this block was written (the connection closed)
                self._partial.abort()
        return self.service.run(write)

    async def finish(self) -> dict:
        """Store the complete upload; its public shape with ``id``. Raises UnsupportedMediaType,
        PayloadTooLarge ``upload_quota_exceeded``, ValidationError ``empty_upload``."""
        if self.received == 0:
            raise ValidationError("The upload is empty", "empty_upload")
        if self.content_type is None and self.text is None:
            self._sniff()  # shorter than SNIFF_BYTES
        if self._buffer or self._partial is None:
            await self._flush()
        if self.text is not None and not self.text.close():
            raise UnsupportedMediaType(NOT_ALLOWED, "unsupported_media_type")
        partial = self._partial
        if partial is None:
            raise ValidationError("The upload is empty", "empty_upload")
        stored = await self.service.store_upload(self.user_id, self.filename, self.received, partial,
                                                 self.content_type or TEXT)
        self._partial = None  # committed: abort() must not remove it
        return stored

    def abort(self) -> None:
        """Drop the partial file (an error, a closed connection); idempotent."""
        if self.closed:
            return
        self.closed = True
        partial, self._partial = self._partial, None
        if partial is not None:
            self.service.run(partial.abort)


class UploadService:
    """Uploads and attachments (see the module docstring). Blocking store calls run in ``pool``."""

    def __init__(self, dbx: DatabaseExecutor, store: UploadStore, secret: Callable[[], str],
                 limits: UploadLimits = UploadLimits(), threads: int = 2):
        self.dbx = dbx
        self.store = store
        self.limits = limits
        self._secret = secret  # the server's signing secret (the JWT secret, read at each use: it may change)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="squall-uploads")
        self._sweeper: Optional[asyncio.Task] = None

    def run(self, fn: Callable, *args) -> "asyncio.Future":
        """``fn(*args)`` in the upload threads."""
        return asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    # Receiving -------------------------------------------------------------------------------

    async def receive(self, user_id: int, filename: Optional[str], length: Optional[int]) -> Receiver:
        """A receiver for an upload of ``length`` bytes (None: chunked, unknown).

        Raises PayloadTooLarge ``upload_too_large`` (over ``max_bytes``) or
        ``upload_quota_exceeded`` (the user's stored uploads plus this one over ``quota_bytes``).
        """
        if length is not None and length > self.limits.max_bytes:
            raise PayloadTooLarge(f"Uploads are limited to {self.limits.max_bytes} bytes", "upload_too_large")
        used = await self.used_bytes(user_id)
        if used + (length or 1) > self.limits.quota_bytes:
            raise PayloadTooLarge(f"Your uploads would pass your quota of {self.limits.quota_bytes} bytes",
                                  "upload_quota_exceeded")
        return Receiver(self, user_id, sanitize_filename(filename))

    async def used_bytes(self, user_id: int) -> int:
        """Bytes of all of ``user_id``'s stored uploads (attached or not)."""
        return await self.dbx.read(
            lambda: Upload.select(peewee.fn.COALESCE(peewee.fn.SUM(Upload.size), 0))
            .where(Upload.owner == user_id).scalar() or 0)

    async def store_upload(self, owner: int, filename: str, size: int, partial: PartialUpload,
                           content_type: str) -> dict:
        """Decode an image, commit the file and insert its row (quota checked again in the transaction).

        Raises UnsupportedMediaType (an image that does not decode or is too large: ``partial``
        is left to its receiver to abort), PayloadTooLarge ``upload_quota_exceeded`` (the stored
        file is deleted).
        """
        upload_id = secrets.token_urlsafe(16)
        info: Optional[ImageInfo] = None
        if content_type in IMAGE_TYPES:
            try:
                info = await self.run(lambda: inspect_image(self.store.local_path(partial), content_type))
            except MediaRefused as exc:
                raise UnsupportedMediaType(str(exc), exc.code) from None
        thumb_key = upload_id + ".thumb" if info is not None else None

        def place() -> None:
            self.store.commit(partial, upload_id)
            if info is not None and thumb_key is not None:
                self.store.put(thumb_key, info.thumbnail)
        await self.run(place)
        quota = self.limits.quota_bytes

        def insert() -> None:
            used = (Upload.select(peewee.fn.COALESCE(peewee.fn.SUM(Upload.size), 0))
                    .where(Upload.owner == owner).scalar() or 0)
            if used + size > quota:  # concurrent uploads of one user: the last to commit is refused
                raise PayloadTooLarge(f"Your uploads would pass your quota of {quota} bytes", "upload_quota_exceeded")
            Upload.insert(id=upload_id, owner=owner, size=size, content_type=content_type,
                          filename=filename, width=info.width if info else None,
                          height=info.height if info else None, thumbnail_key=thumb_key,
                          created_at=utcnow()).execute()
        try:
            await self.dbx.write(insert)
        except Exception:
            await self.run(self._delete_blobs, upload_id, thumb_key)
            raise
        return {"id": upload_id, "content_type": content_type, "size": size, "filename": filename,
                "width": info.width if info else None, "height": info.height if info else None}

    def _delete_blobs(self, key: str, thumb_key: Optional[str]) -> None:
        self.store.delete(key)
        if thumb_key:
            self.store.delete(thumb_key)

    # Attaching -------------------------------------------------------------------------------

    def validate_ids(self, raw) -> List[str]:
        """The upload ids of a send's ``attachments`` (distinct, in order). Raises ValidationError
        ``invalid_attachments``, ``too_many_attachments``."""
        if not isinstance(raw, list) or not all(isinstance(i, str) and ID_RE.match(i) for i in raw):
            raise ValidationError("'attachments' must be a list of upload ids", "invalid_attachments")
        ids = list(dict.fromkeys(raw))
        if len(ids) > self.limits.max_attachments:
            raise ValidationError(f"A message has at most {self.limits.max_attachments} attachments",
                                  "too_many_attachments")
        return ids

    async def check_attachable(self, user_id: int, ids: Sequence[str], client_id: Optional[str] = None) -> List[dict]:
        """The attachments for ``ids``, all uploads of ``user_id`` not attached yet.

        A resend (the same ``client_id``) finds them attached to its first message, and passes:
        the writer answers with that message. Raises ValidationError ``attachment_not_found``
        (unknown, or another user's: the same answer, so ids cannot be probed), AttachmentTaken
        ``attachment_already_used`` (both 400).
        """
        def load():
            rows = {r.id: r for r in Upload.select().where(Upload.id.in_(list(ids)) & (Upload.owner == user_id))}
            first = None
            if client_id is not None and any(r.message_id is not None for r in rows.values()):
                first = Message.select(Message.id).where(
                    (Message.sender == user_id) & (Message.client_id == client_id)).scalar()
            return rows, first
        rows, first = await self.dbx.read(load)
        missing = [i for i in ids if i not in rows]
        if missing:
            raise ValidationError("No such upload of yours: " + ", ".join(missing[:3]), "attachment_not_found")
        if any(rows[i].message_id is not None and rows[i].message_id != first for i in ids):
            raise AttachmentTaken("An upload is already attached to a message")
        return [attachment_dict(rows[i]) for i in ids]

    @staticmethod
    def attach(owner: int, chat_id: int, message_id: int, ids: Sequence[str]) -> None:
        """Attach ``ids`` to a message (writer thread, inside the message's transaction).

        Raises AttachmentTaken when one was attached meanwhile: the send's savepoint rolls back.
        """
        changed = Upload.update(message=message_id, chat=chat_id).where(
            Upload.id.in_(list(ids)) & (Upload.owner == owner) & Upload.message.is_null()).execute()
        if changed != len(ids):
            raise AttachmentTaken("An upload is already attached to a message")

    @staticmethod
    def attachments_of(message_ids: Iterable[int]) -> Dict[int, List[dict]]:
        """``{message id: [attachment]}`` for the messages that have any (reader thread)."""
        ids = list(message_ids)
        out: Dict[int, List[dict]] = {}
        if not ids:
            return out
        query = (Upload.select(Upload.message, Upload.id, Upload.content_type, Upload.size, Upload.filename,
                               Upload.width, Upload.height)
                 .where(Upload.message.in_(ids)).order_by(Upload.created_at, Upload.id).tuples())
        rows = cast(Iterable[Tuple[Any, ...]], query)
        for mid, uid, content_type, size, filename, width, height in rows:
            out.setdefault(mid, []).append({"id": uid, "content_type": content_type, "size": size,
                                            "filename": filename, "width": width, "height": height})
        return out

    # Serving ---------------------------------------------------------------------------------

    def _signature(self, upload_id: str, variant: str, exp: int) -> str:
        key = hmac.new(self._secret().encode("utf-8"), b"squall upload links v1", hashlib.sha256).digest()
        mac = hmac.new(key, f"{upload_id}\n{variant}\n{exp}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def signed_path(self, upload_id: str, variant: str, exp: int) -> str:
        """``/files/{id}?exp=&sig=`` (``variant=thumb`` added for the thumbnail)."""
        query = f"exp={exp}&sig={self._signature(upload_id, variant, exp)}"
        return f"/files/{upload_id}?" + (f"variant=thumb&{query}" if variant == "thumb" else query)

    async def link(self, user_id: int, upload_id: str) -> dict:
        """Signed links ``{url, thumbnail_url, expires_at}`` for a member of the upload's chat
        (or its owner, before it is attached).

        Raises NotFound ``upload_not_found`` (unknown id, or a caller who may not see it: the
        same answer, so ids cannot be probed).
        """
        def load():
            row = Upload.get_or_none(Upload.id == upload_id) if ID_RE.match(upload_id) else None
            if row is None:
                return None
            if row.owner_id == user_id and row.chat_id is None:
                return row
            if row.chat_id is not None and ChatMember.select().where(
                    (ChatMember.chat == row.chat_id) & (ChatMember.user == user_id)).exists():
                return row
            return None
        row = await self.dbx.read(load)
        if row is None:
            raise NotFound("No such upload", "upload_not_found")
        exp = int(time.time()) + self.limits.url_ttl
        return {"url": self.signed_path(row.id, "file", exp),
                "thumbnail_url": self.signed_path(row.id, "thumb", exp) if row.thumbnail_key else None,
                "expires_at": datetime.datetime.fromtimestamp(exp, datetime.timezone.utc)
                .strftime("%Y-%m-%dT%H:%M:%SZ")}

    async def verify(self, upload_id: str, variant: str, exp: Optional[str], sig: Optional[str]) -> dict:
        """The file a signed link names: ``{key, content_type, size, filename, image}``.

        Raises Forbidden ``invalid_signature`` (missing, malformed or wrong), ``link_expired``;
        NotFound ``upload_not_found`` (deleted since, or no thumbnail).
        """
        if (variant not in VARIANTS or not ID_RE.match(upload_id) or not exp or not exp.isdigit() or len(exp) > 12
                or not sig):
            raise Forbidden("The link is not valid", "invalid_signature")
        expected = self._signature(upload_id, variant, int(exp))
        if not hmac.compare_digest(expected.encode(), sig.encode("utf-8", "replace")):
            raise Forbidden("The link is not valid", "invalid_signature")
        if int(exp) < time.time():
            raise Forbidden("The link has expired; ask for a new one", "link_expired")
        row = await self.dbx.read(lambda: Upload.get_or_none(Upload.id == upload_id))
        if row is None or (variant == "thumb" and not row.thumbnail_key):
            raise NotFound("No such upload", "upload_not_found")
        if variant == "thumb":
            return {"key": row.thumbnail_key, "content_type": "image/png", "size": None,
                    "filename": row.filename.rsplit(".", 1)[0] + "-thumbnail.png", "image": True}
        return {"key": row.id, "content_type": row.content_type, "size": row.size, "filename": row.filename,
                "image": row.content_type in IMAGE_TYPES}

    # Cleanup ---------------------------------------------------------------------------------

    async def sweep(self) -> int:
        """Delete orphan uploads older than ``orphan_ttl`` and stale partial files; how many rows."""
        cutoff = utcnow() - datetime.timedelta(seconds=self.limits.orphan_ttl)

        def take():
            rows = list(Upload.select(Upload.id, Upload.thumbnail_key).where(
                Upload.message.is_null() & (Upload.created_at < cutoff)).limit(1000).tuples())
            if rows:
                Upload.delete().where(Upload.id.in_([r[0] for r in rows]) & Upload.message.is_null()).execute()
            return rows
        rows = await self.dbx.write(take)

        def remove() -> None:
            for key, thumb in rows:
                self._delete_blobs(key, thumb)
            # a partial untouched for longer than a body may take is from an interrupted upload
            # (a crash: a closed connection removes its own at once)
            self.store.stale_partials(self.limits.timeout + 60.0)
        await self.run(remove)
        if rows:
            log.info("deleted %d orphan uploads", len(rows))
        return len(rows)

    async def _sweep_forever(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                await self.sweep()
            except Exception:
                log.exception("sweeping orphan uploads failed")

    def start(self) -> None:
        """Sweep orphans every ``min(orphan_ttl / 4, 10 min)``."""
        every = max(1.0, min(self.limits.orphan_ttl / 4, 600.0))
        self._sweeper = spawn(self._sweep_forever(every), name="uploads.sweep")

    def close(self) -> None:
        """Stop sweeping; let running store calls finish."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        self._pool.shutdown(wait=False)

