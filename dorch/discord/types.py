"""The shapes of Discord's JSON that dorch reads, as TypedDicts (after discord.py's
``discord/types/``), trimmed to the fields dorch uses.

Every key is optional (``total=False``): Discord leaves fields out (a message without
reactions has no ``reactions``), and dorch reads them with ``.get`` and a default; ids
(snowflakes) are strings, as Discord sends them.
"""

from __future__ import annotations

from typing import Any, TypedDict

Snowflake = str


class User(TypedDict, total=False):
    id: Snowflake
    username: str
    global_name: str | None
    bot: bool


class Member(TypedDict, total=False):
    user: User
    nick: str | None
    roles: list[Snowflake]


class Emoji(TypedDict, total=False):
    id: Snowflake | None
    name: str | None


class Reaction(TypedDict, total=False):
    count: int
    me: bool
    emoji: Emoji


class Attachment(TypedDict, total=False):
    id: Snowflake
    filename: str
    size: int
    url: str
    content_type: str
    description: str


class ThreadMetadata(TypedDict, total=False):
    archived: bool
    locked: bool
    auto_archive_duration: int
    archive_timestamp: str
    create_timestamp: str


class Channel(TypedDict, total=False):
    """A channel or a thread (a thread has ``owner_id``, ``parent_id`` and its metadata)."""

    id: Snowflake
    type: int
    guild_id: Snowflake
    name: str
    parent_id: Snowflake | None
    owner_id: Snowflake
    total_message_sent: int
    message_count: int
    thread_metadata: ThreadMetadata
    permission_overwrites: list[dict[str, Any]]  # doctor.py does the permission arithmetic


Thread = Channel


class Message(TypedDict, total=False):
    id: Snowflake
    channel_id: Snowflake
    type: int  # 0 default, 19 reply; others are system messages
    author: User
    content: str
    timestamp: str
    edited_timestamp: str | None
    attachments: list[Attachment]
    reactions: list[Reaction]
    nonce: int | str
    webhook_id: Snowflake
    application_id: Snowflake
    interaction: object
    interaction_metadata: object
    thread: Channel
