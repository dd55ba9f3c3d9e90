"""Chat: chats, members, messages, receipts and typing.

- ``ChatService``: the one service ``/ws/chat``, ``/sse/chat`` + HTTP and the service API call;
  membership (cached, and dropped on every process when it changes).
- ``MessageWriter``: the group commit (many sends, one transaction, acks after the commit).
- ``ChatLimits``: the sizes and rates a chat allows.
- ``MessageSearch``: ``GET /api/search``, each database's own full-text engine.
- ``UploadService``: attachments (``POST /api/uploads``, signed links, the orphan sweep) over an
  ``UploadStore`` (``LocalUploadStore``: ``--upload-dir``).

Uses ``storage``, ``operations``, ``delivery`` and ``identity``.
"""
from .search import MessageSearch
from .service import ChatLimits, ChatService, MessageWriter
from .upload_store import LocalUploadStore, UploadStore
from .uploads import UploadLimits, UploadService

__all__ = ["ChatLimits", "ChatService", "MessageSearch", "MessageWriter", "LocalUploadStore", "UploadLimits",
           "UploadService", "UploadStore"]
