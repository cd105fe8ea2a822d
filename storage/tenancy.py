"""Reads of tenants: client users, workspaces, members, phone numbers, voice agents.

``resolve_number`` is what a carrier webhook calls: dialled number → number, agent, workspace,
in one query.
"""

from __future__ import annotations

from dataclasses import dataclass

from storage.db import Executor
from storage.models import (
    ClientUser,
    PhoneNumber,
    VoiceAgent,
    Workspace,
    WorkspaceMember,
    columns,
    field_names,
    from_row,
)

AGENT_STATUSES = ("draft", "testing", "live", "paused")
WORKSPACE_STATUSES = ("active", "trial", "suspended", "cancelled")
NUMBER_STATUSES = ("active", "inactive", "porting")
MEMBER_ROLES = ("owner", "admin", "member", "viewer")
SUBSCRIPTION_TIERS = ("starter", "professional", "enterprise")


@dataclass(frozen=True, slots=True)
class NumberRoute:
    """A dialled number with its workspace and the agent answering it (None: no agent)."""

    number: PhoneNumber
    agent: VoiceAgent | None
    workspace: Workspace


# The agent of a number: live first, then testing, else the newest; never another tenant's.
_RESOLVE_NUMBER = f"""
SELECT {columns(PhoneNumber, "p")}, {columns(Workspace, "w")}, {columns(VoiceAgent, "a")}
FROM phone_numbers p
JOIN workspaces w ON w.id = p.workspace_id
LEFT JOIN voice_agents a ON a.id = (
    SELECT c.id FROM voice_agents c
    WHERE c.phone_number_id = p.id AND c.workspace_id = p.workspace_id
    ORDER BY CASE c.status WHEN 'live' THEN 0 WHEN 'testing' THEN 1 ELSE 2 END,
             c.created_at DESC, c.id DESC
    LIMIT 1)
WHERE p.phone_number = ?
"""


async def resolve_number(db: Executor, e164: str) -> NumberRoute | None:
    row = await db.fetchone(_RESOLVE_NUMBER, (e164,))
    if row is None:
        return None
    values = tuple(row)
    n_number, n_workspace = len(field_names(PhoneNumber)), len(field_names(Workspace))
    agent_values = values[n_number + n_workspace :]
    return NumberRoute(
        number=from_row(PhoneNumber, values[:n_number]),
        workspace=from_row(Workspace, values[n_number : n_number + n_workspace]),
        agent=None if agent_values[0] is None else from_row(VoiceAgent, agent_values),
    )


async def get_client_user(db: Executor, user_id: str) -> ClientUser | None:
    row = await db.fetchone(f"SELECT {columns(ClientUser)} FROM client_users WHERE id = ?", (user_id,))
    return None if row is None else from_row(ClientUser, row)


async def get_client_user_by_email(db: Executor, email: str) -> ClientUser | None:
    row = await db.fetchone(f"SELECT {columns(ClientUser)} FROM client_users WHERE email = ?", (email,))
    return None if row is None else from_row(ClientUser, row)


async def get_workspace(db: Executor, workspace_id: str) -> Workspace | None:
    row = await db.fetchone(f"SELECT {columns(Workspace)} FROM workspaces WHERE id = ?", (workspace_id,))
    return None if row is None else from_row(Workspace, row)


async def list_workspaces(db: Executor, owner_id: str | None = None) -> list[Workspace]:
    if owner_id is None:
        rows = await db.fetchall(f"SELECT {columns(Workspace)} FROM workspaces ORDER BY created_at, id")
    else:
        rows = await db.fetchall(
            f"SELECT {columns(Workspace)} FROM workspaces WHERE owner_id = ? ORDER BY created_at, id",
            (owner_id,),
        )
    return [from_row(Workspace, row) for row in rows]


async def list_members(db: Executor, workspace_id: str) -> list[WorkspaceMember]:
    rows = await db.fetchall(
        f"SELECT {columns(WorkspaceMember)} FROM workspace_members WHERE workspace_id = ?"
        " ORDER BY joined_at, user_id",
        (workspace_id,),
    )
    return [from_row(WorkspaceMember, row) for row in rows]


async def get_phone_number(db: Executor, e164: str) -> PhoneNumber | None:
    row = await db.fetchone(
        f"SELECT {columns(PhoneNumber)} FROM phone_numbers WHERE phone_number = ?", (e164,)
    )
    return None if row is None else from_row(PhoneNumber, row)


async def list_phone_numbers(db: Executor, workspace_id: str) -> list[PhoneNumber]:
    rows = await db.fetchall(
        f"SELECT {columns(PhoneNumber)} FROM phone_numbers WHERE workspace_id = ? ORDER BY created_at, id",
        (workspace_id,),
    )
    return [from_row(PhoneNumber, row) for row in rows]


async def get_agent(db: Executor, agent_id: str) -> VoiceAgent | None:
    row = await db.fetchone(f"SELECT {columns(VoiceAgent)} FROM voice_agents WHERE id = ?", (agent_id,))
    return None if row is None else from_row(VoiceAgent, row)


async def list_agents(db: Executor, workspace_id: str) -> list[VoiceAgent]:
    rows = await db.fetchall(
        f"SELECT {columns(VoiceAgent)} FROM voice_agents WHERE workspace_id = ? ORDER BY created_at, id",
        (workspace_id,),
    )
    return [from_row(VoiceAgent, row) for row in rows]
