"""Zammad's JSON shapes for the emulator's records, as its REST API answers them.

``ticket_json`` is ``attributes_with_association_ids`` (plus names with
``expand``, as ``attributes_with_association_names``); articles carry their
``type``, ``sender`` and author names, as ``by_ticket`` answers them, except
inside assets, where Zammad puts ``attributes_with_association_ids`` (ids
only); shared drafts come as assets keyed ``TicketSharedDraftZoom``.

``ticket_all`` is the answer to ``GET /tickets/{id}?all=true``, as
``TicketsController#ticket_all`` builds it (app/controllers/tickets_controller.rb;
``Ticket::AssetsAll#all_assets`` in app/models/ticket/assets_all.rb in newer
releases)::

    {"ticket_id": 42, "ticket_article_ids": [101, 102],
     "assets": {"Ticket": {"42": {...}}, "TicketArticle": {"101": {...}, ...},
                "User": {"7": {...}, ...}, "TicketSharedDraftZoom": {...}},
     "links": [], "tags": ["billing"], "mentions": [], "time_accountings": [],
     "form_meta": {...}}

Articles are those the user may see (internal notes only for agents), in the
ticket's order; ``User`` holds the ticket's and the articles' people; the
shared draft is there when the ticket has one and the user may change it.
Links, mentions and time accounting are always empty here, and ``form_meta``
carries only the ``filter`` part of Zammad's screen options.
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


def article_json(store: Store, a: Article, *, names: bool = True) -> dict[str, Any]:
    """An article as ``by_ticket`` answers it; without ``names`` as assets hold it (ids only)."""
    with store.lock:
        author = store.users.get(a.created_by_id)
        login = author.login if author else "-"
        data: dict[str, Any] = {
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
        }
        if names:
            data.update(type=a.type, sender=a.sender, created_by=login, updated_by=login)
        return data


def ticket_all(
    store: Store,
    t: Ticket,
    articles: list[Article],
    draft: SharedDraft | None,
) -> dict[str, Any]:
    """``GET /tickets/{id}?all=true``: the ticket with its articles, people and tags (see above)."""
    with store.lock:
        people = {t.created_by_id, t.updated_by_id, t.owner_id, t.customer_id}
        people.update(a.created_by_id for a in articles)
        assets: dict[str, Any] = {
            "Ticket": {str(t.id): ticket_json(store, t)},
            "TicketArticle": {str(a.id): article_json(store, a, names=False) for a in articles},
            "User": {
                str(user_id): user_json(store, store.users[user_id])
                for user_id in sorted(people)
                if user_id in store.users
            },
        }
        if draft is not None:
            assets.update(draft_assets(draft))
        return {
            "ticket_id": t.id,
            "ticket_article_ids": [a.id for a in articles],
            "assets": assets,
            "links": [],
            "tags": list(t.tags),
            "mentions": [],
            "time_accountings": [],
            "form_meta": {
                "filter": {
                    "group_id": sorted(store.groups),
                    "priority_id": sorted(store.priorities),
                    "state_id": sorted(store.states),
                    "type_id": [ARTICLE_TYPES["note"], ARTICLE_TYPES["phone"]],
                },
                "dependencies": None,
            },
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


def user_assets(store: Store, u: User) -> dict[str, Any]:
    """The assets ``GET /users/{id}?full=true`` carries: the user, and the groups it may access.

    User::Assets adds a Group asset for each of the user's own group ids; the
    password never leaves.
    """
    with store.lock:
        groups = {
            str(gid): group_json(store.groups[gid]) for gid in u.group_access if gid in store.groups
        }
    return {"User": {str(u.id): user_json(store, u)}, "Group": groups}


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


# What Zammad's default webhook payload leaves out of every user it embeds
# (TriggerWebhookJob::RecordPayload::Base::USER_ATTRIBUTE_BLACKLIST).
_WEBHOOK_USER_OMITS = ("group_ids", "groups", "password", "preferences", "last_login")


def webhook_payload(store: Store, t: Ticket, article: Article | None) -> dict[str, Any]:
    """A trigger's default payload (TriggerWebhookJob::RecordPayload), as Zammad builds it.

    The ticket's attributes with association names, keys sorted; then owner,
    customer, created_by, updated_by, organization, priority and group each
    replaced by the associated record's attributes (``{}`` when the id is
    blank), users without their group rights and preferences. ``state`` stays
    a name. The article's created_by and updated_by become objects too, and it
    is ``{}`` when the trigger fired without one.
    """

    def user(user_id: int | None) -> dict[str, Any]:
        found = store.users.get(user_id) if user_id is not None else None
        if found is None:
            return {}
        data = user_json(store, found, expand=True)
        return {k: v for k, v in sorted(data.items()) if k not in _WEBHOOK_USER_OMITS}

    ticket = ticket_json(store, t, expand=True)
    with store.lock:
        priority = store.priorities[t.priority_id]
        group = store.groups[t.group_id]
    ticket.update(
        owner=user(t.owner_id),
        customer=user(t.customer_id),
        created_by=user(t.created_by_id),
        updated_by=user(t.updated_by_id),
        organization={},
        priority={"active": priority.active, "id": priority.id, "name": priority.name},
        group=dict(sorted(group_json(group).items())),
    )
    payload_article: dict[str, Any] = {}
    if article is not None:
        payload_article = article_json(store, article)
        payload_article.update(
            created_by=user(article.created_by_id),
            updated_by=user(article.created_by_id),
            accounted_time=0,
        )
        payload_article = dict(sorted(payload_article.items()))
    return {"ticket": dict(sorted(ticket.items())), "article": payload_article}


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
