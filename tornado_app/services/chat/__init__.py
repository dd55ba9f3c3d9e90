"""Chat: chats, members, messages, receipts and typing.

- ``ChatService``: the one service ``/ws/chat``, ``/sse/chat`` + HTTP and the service API call;
  membership (cached, and dropped on every process when it changes).
- ``MessageWriter``: the group commit (many sends, one transaction, acks after the commit).
- ``ChatLimits``: the sizes and rates a chat allows.
- ``store``: the messages aggregate's storage (the group commit's set-wise statements: the one
  path every message is stored by, search), every fast SQL path of the chat; ``group_store``
  (chats, members, group changes), ``history_store`` (history, replay, summaries, read
  positions), ``change_store`` (edits, deletes, reactions); ``shape``: the one shape of a message.
- ``MessageSearch``: ``GET /api/search``, each database's own full-text engine.
- ``GroupService``: groups that change (title, members, roles, leaving; system messages).
- ``PresenceService``: online and last seen, for people who share a chat (``GET /api/presence``).
- ``UploadService``: attachments (``POST /api/uploads``, signed links, the orphan sweep) over an
  ``UploadStore`` (``LocalUploadStore``: ``--upload-dir``).

Uses ``storage``, ``operations``, ``delivery`` and ``identity``.
"""
from .groups import GroupService
from .presence import PresenceService
from .search import MessageSearch
from .service import ChatLimits, ChatService, MessageWriter
from .upload_store import LocalUploadStore, UploadStore
from .uploads import UploadLimits, UploadService

__all__ = ["ChatLimits", "ChatService", "GroupService", "PresenceService", "MessageSearch", "MessageWriter", "LocalUploadStore", "UploadLimits",
           "UploadService", "UploadStore"]
