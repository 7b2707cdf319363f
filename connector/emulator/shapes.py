"""Zammad's JSON shapes for the emulator's records, as its REST API answers them.

``ticket_json`` is ``attributes_with_association_ids`` (plus names with
``expand``, as ``attributes_with_association_names``); articles always carry
their ``type``, ``sender`` and author names, as ``by_ticket`` answers them;
shared drafts come as assets keyed ``TicketSharedDraftZoom``.
"""

from __future__ import annotations

from typing import Any

from connector.emulator.store import (
    ARTICLE_SENDERS,
    ARTICLE_TYPES,
    ROLE_IDS,
    Article,
    Group,
    SharedDraft,
    Store,
    Ticket,
    User,
    iso,
)


def ticket_json(store: Store, t: Ticket, *, expand: bool = False) -> dict[str, Any]:
    with store.lock:
        data: dict[str, Any] = {
            "id": t.id,
            "group_id": t.group_id,
            "priority_id": t.priority_id,
            "state_id": t.state_id,
            "organization_id": None,
            "number": t.number,
            "title": t.title,
            "owner_id": t.owner_id,
            "customer_id": t.customer_id,
            "note": None,
            "article_count": len(t.article_ids),
            "pending_time": None,
            "type": None,
            "preferences": {},
            "updated_by_id": t.updated_by_id,
            "created_by_id": t.created_by_id,
            "created_at": iso(t.created_at),
            "updated_at": iso(t.updated_at),
            "article_ids": list(t.article_ids),
            "ticket_time_accounting_ids": [],
        }
        if expand:
            data.update(
                group=store.groups[t.group_id].name,
                priority=store.priorities[t.priority_id].name,
                state=store.states[t.state_id].name,
                owner=store.users[t.owner_id].login,
                customer=store.users[t.customer_id].login,
                organization=None,
                created_by=store.users[t.created_by_id].login,
                updated_by=store.users[t.updated_by_id].login,
            )
        return data


def article_json(store: Store, a: Article) -> dict[str, Any]:
    with store.lock:
        author = store.users.get(a.created_by_id)
        login = author.login if author else "-"
        return {
            "id": a.id,
            "ticket_id": a.ticket_id,
            "type_id": ARTICLE_TYPES[a.type],
            "sender_id": ARTICLE_SENDERS[a.sender],
            "from": a.from_,
            "to": a.to,
            "cc": None,
            "subject": a.subject,
            "reply_to": None,
            "message_id": None,
            "in_reply_to": None,
            "content_type": a.content_type,
            "body": a.body,
            "internal": a.internal,
            "preferences": {},
            "updated_by_id": a.created_by_id,
            "created_by_id": a.created_by_id,
            "origin_by_id": None,
            "created_at": iso(a.created_at),
            "updated_at": iso(a.created_at),
            "attachments": [],
            "type": a.type,
            "sender": a.sender,
            "created_by": login,
            "updated_by": login,
        }


def user_json(store: Store, u: User, *, expand: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": u.id,
        "organization_id": None,
        "login": u.login,
        "firstname": u.firstname,
        "lastname": u.lastname,
        "email": u.email,
        "active": u.active,
        "vip": False,
        "out_of_office": False,
        "created_at": iso(u.created_at),
        "updated_at": iso(u.updated_at),
        "role_ids": [ROLE_IDS[r] for r in u.roles if r in ROLE_IDS],
        "group_ids": {str(gid): list(rights) for gid, rights in u.group_access.items()},
        "organization_ids": [],
    }
    if expand:
        with store.lock:
            data["roles"] = list(u.roles)
            data["groups"] = {
                store.groups[gid].name: list(rights)
                for gid, rights in u.group_access.items()
                if gid in store.groups
            }
    return data


def group_json(g: Group) -> dict[str, Any]:
    return {
        "id": g.id,
        "name": g.name,
        "active": g.active,
        "shared_drafts": g.shared_drafts,
        "note": g.note,
        "follow_up_possible": "yes",
        "assignment_timeout": None,
    }


def draft_assets(d: SharedDraft) -> dict[str, Any]:
    return {
        "TicketSharedDraftZoom": {
            str(d.id): {
                "id": d.id,
                "ticket_id": d.ticket_id,
                "new_article": d.new_article,
                "ticket_attributes": d.ticket_attributes,
                "created_by_id": d.created_by_id,
                "updated_by_id": d.updated_by_id,
                "created_at": iso(d.created_at),
                "updated_at": iso(d.updated_at),
            }
        }
    }
