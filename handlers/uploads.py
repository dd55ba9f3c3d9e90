"""Attachments over HTTP: upload a file (streamed to disk), get signed links, serve a file by its link.

The logic is in tornado_app/services/chat/uploads.py; these handlers parse, authenticate,
stream bytes in and out.
"""
from __future__ import annotations

import os
from typing import Awaitable, Optional
from urllib.parse import quote

import tornado.web
from tornado.http1connection import HTTP1Connection

from tornado_app.httpserver import UNLIMITED_BODY
from tornado_app.errors import Forbidden, NotFound, PayloadTooLarge, SquallError, Unauthorized, UnsupportedMediaType, ValidationError
from tornado_app.services.chat.uploads import Receiver, UploadService

from .base import BaseHandler, authenticated, public

READ_CHUNK = 64 * 1024  # bytes read from the store and written to the client at a time
FILE_CSP = "default-src 'none'; sandbox"  # a served file can run nothing, load nothing, even opened as a page


def caller(handler: BaseHandler) -> int:
    """The authenticated user's id. Raises Unauthorized when the request has none."""
    if handler.user_id is None:
        raise Unauthorized("A user token is required")
    return handler.user_id


@tornado.web.stream_request_body
class UploadsHandler(BaseHandler):
    """POST /api/uploads?filename=: the raw body is the file (``Content-Type: application/octet-stream``).

    Authenticated in ``prepare``, before any byte of the body is read; the body goes to disk
    as it arrives (never whole in memory). 201 with the upload's ``id``.
    """

    receiver: Optional[Receiver] = None
    refusal: Optional[SquallError] = None  # the body's bytes were refused (answered once it ends)

    @property
    def uploads(self) -> UploadService:
        """The upload service."""
        uploads = self.services.uploads
        if uploads is None:
            raise Forbidden("Uploads are disabled", "uploads_disabled")
        return uploads

    async def prepare(self) -> None:
        """Check origin, type, token, size and quota from the headers; then raise this request's body limits.

        ``application/octet-stream`` is required: a page on another site cannot send it
        without a CORS preflight, so a cookie-authenticated upload cannot be forged.
        """
        if self.is_preflight() or self.request.method != "POST":
            return
        if self.foreign_origin():
            raise Forbidden("Requests from another site are not accepted", "csrf_rejected")
        content_type = self.request.headers.get("Content-Type", "")
        if content_type.split(";", 1)[0].strip().lower() != "application/octet-stream":
            raise UnsupportedMediaType("Send the file as the body with 'Content-Type: application/octet-stream'",
                                       "octet_stream_required")
        self.authenticate()
        await self.require_known_user()
        raw = self.request.headers.get("Content-Length")
        length = int(raw) if raw is not None and raw.strip().isdigit() else None
        uploads = self.uploads
        self.receiver = await uploads.receive(caller(self), self.get_query_argument("filename", None), length)
        connection = self.request.connection
        if isinstance(connection, HTTP1Connection):
            # The server's global limit is for JSON bodies. Chunked: no length to check, and Tornado
            # would answer its own empty 400 past a limit; Receiver.feed counts and answers 413.
            connection.set_max_body_size(uploads.limits.max_bytes if length is not None else UNLIMITED_BODY)
            connection.set_body_timeout(uploads.limits.timeout)

    def data_received(self, chunk: bytes) -> Optional[Awaitable[None]]:
        """Pass a chunk on. A refused type is answered when the body ends (the rest is read and
        dropped: a client still sending may not read an earlier answer); a size past the limit
        at once (nothing more is read; the connection closes)."""
        receiver = self.receiver
        if receiver is None or receiver.closed:
            return None
        try:
            return receiver.feed(chunk)
        except PayloadTooLarge as exc:
            receiver.abort()
            self.send_error(exc.status, exc_info=(type(exc), exc, None))
        except SquallError as exc:
            receiver.abort()
            self.refusal = exc
        return None

    @authenticated
    async def post(self) -> None:
        """201 ``{id, content_type, size, filename, width, height}`` once stored."""
        receiver = self.receiver
        if self.refusal is not None:
            raise self.refusal
        if receiver is None:
            raise ValidationError("No upload was received", "empty_upload")
        try:
            upload = await receiver.finish()
        except BaseException:
            receiver.abort()
            raise
        self.send_json(upload, 201)

    def on_connection_close(self) -> None:
        """An interrupted upload leaves no file behind."""
        if self.receiver is not None:
            self.receiver.abort()  # idempotent; nothing to remove once stored
        super().on_connection_close()


class UploadLinkHandler(BaseHandler):
    """GET /api/uploads/{id}/link."""

    @authenticated
    async def get(self, upload_id: str) -> None:
        """Signed links ``{url, thumbnail_url, expires_at}`` (``--upload-url-ttl``) for a member of
        the upload's chat, or its owner before it is sent; 404 ``upload_not_found`` otherwise."""
        uploads = self.services.uploads
        if uploads is None:
            raise Forbidden("Uploads are disabled", "uploads_disabled")
        self.send_json(await uploads.link(caller(self), upload_id))


def content_disposition(kind: str, filename: str) -> str:
    """``inline`` or ``attachment`` with an ASCII fallback name and the RFC 5987 ``filename*``."""
    fallback = "".join(ch if 32 <= ord(ch) < 127 and ch not in '"\\;' else "_" for ch in filename)
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


class FileHandler(BaseHandler):
    """GET /files/{id}?exp=&sig= (``&variant=thumb``): the file a signed link names, streamed from the store.

    Public: the link is the credential (an ``<img src>`` sends no token). Its query never
    reaches a log: the access log writes the path alone (handlers/base.py ``log_request``).
    """

    @public
    async def get(self, upload_id: str) -> None:
        """The bytes, with nosniff, a sandboxing CSP, Content-Disposition and private caching.

        403 ``invalid_signature`` / ``link_expired``; 404 ``upload_not_found``.
        """
        uploads = self.services.uploads
        if uploads is None:
            raise Forbidden("Uploads are disabled", "uploads_disabled")
        info = await uploads.verify(upload_id, self.get_query_argument("variant", "file"),
                                    self.get_query_argument("exp", None), self.get_query_argument("sig", None))
        try:
            stream = await uploads.run(uploads.store.open, info["key"])
        except (FileNotFoundError, ValueError):  # the row outlived its file (a restore without the files)
            raise NotFound("No such upload", "upload_not_found") from None
        try:
            size = info["size"]
            if size is None:
                size = await uploads.run(lambda: os.fstat(stream.fileno()).st_size)
            self.set_header("Content-Type", info["content_type"])
            self.set_header("Content-Length", str(size))
            self.set_header("X-Content-Type-Options", "nosniff")
            self.set_header("Content-Security-Policy", FILE_CSP)
            self.set_header("Content-Disposition",
                            content_disposition("inline" if info["image"] else "attachment", info["filename"]))
            # only the browser that holds the link may keep it, and no longer than the link lives
            self.set_header("Cache-Control", f"private, max-age={uploads.limits.url_ttl}")
            self.set_header("Cross-Origin-Resource-Policy", "same-site")
            if self.request.method == "HEAD":
                self.finish()
                return
            while True:
                chunk = await uploads.run(stream.read, READ_CHUNK)
                if not chunk:
                    break
                self.write(chunk)
                await self.flush()  # one chunk in memory at a time; waits while the client is slow
            self.finish()
        finally:
            stream.close()


ROUTES = [
    (r"/api/uploads", UploadsHandler),
    # any segment: the services check the id (404 upload_not_found; a file link's signature: 403)
    (r"/api/uploads/([^/]+)/link", UploadLinkHandler),
    (r"/files/([^/]+)", FileHandler),
]
