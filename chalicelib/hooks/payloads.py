"""What a webhook receives: GitLab's webhook shape (``object_kind``, the project, the object), or a
message for Slack- and Mattermost-compatible incoming webhooks.

Everything about an error came from whoever holds a DSN (DSNs are public): in the Slack message it
is escaped (``&``, ``<``, ``>``, so no title can mention ``<!channel>`` or hide a link) and cut to
Slack's documented limits, never in the middle of a character or of an escape.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from chalicelib.models import Project, StoredEvent, TrackedError

OBJECT_KIND = "error_tracking"
EVENT_HEADER = "Error Tracking Hook"  # X-Gitlab-Event, in the style of GitLab's "Issue Hook"
TRIGGERS = ("new", "regression", "frequency", "test")
# Slack's limits (api.slack.com/reference/block-kit/blocks, chat.postMessage): a section's text
# 3,000 characters, a header's 150, a context element's 2,000 (at most 10), a message's text 40,000.
SLACK_SECTION_MAX = 3000
SLACK_HEADER_MAX = 150
SLACK_CONTEXT_MAX = 2000
SLACK_TEXT_MAX = 40000
_HEADLINES = {
    "new": "New error",
    "regression": "Regression: a resolved error happened again",
    "frequency": "Error frequency alert",
    "test": "Test notification",
}


@dataclass(frozen=True)
class Notice:
    """One thing to tell one hook: what happened to which error (with its newest event, if read)."""

    trigger: str
    project: Project
    error: TrackedError
    latest: StoredEvent | None
    base_url: str
    window: tuple[int, int] | None = None  # frequency: (events counted, window in minutes)


def project_object(project: Project, base_url: str) -> dict[str, Any]:
    """GitLab's hook project object, its fields that exist here."""
    return {
        "id": int(project.project_id),
        "name": project.name,
        "path_with_namespace": project.path_with_namespace,
        "web_url": f"{base_url}/{project.path_with_namespace}",
    }


def error_url(project: Project, error: TrackedError, base_url: str) -> str:
    return f"{base_url}/api/v4/projects/{int(project.project_id)}/error_tracking/errors/{int(error.error_id)}"


def error_object(notice: Notice) -> dict[str, Any]:
    error, latest = notice.error, notice.latest
    return {
        "id": int(error.error_id),
        "title": error.title,
        "type": error.type,
        "message": error.message,
        "culprit": error.culprit,
        "level": latest.level if latest else None,
        "status": error.status,
        "count": int(error.events_count or 0),
        "user_count": int(error.user_count or 0),
        "first_seen": error.first_seen,
        "last_seen": error.last_seen,
        "environment": latest.environment if latest else None,
        "release": latest.release if latest else None,
        "platform": error.platform,
        "url": error_url(notice.project, error, notice.base_url),
    }


def gitlab_body(notice: Notice) -> dict[str, Any]:
    body: dict[str, Any] = {
        "object_kind": OBJECT_KIND,
        "event_type": OBJECT_KIND,
        "trigger": notice.trigger,
        "project": project_object(notice.project, notice.base_url),
        "object_attributes": error_object(notice),
    }
    if notice.window is not None:
        body["frequency"] = {"events": notice.window[0], "window_minutes": notice.window[1]}
    return body


def slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def fit(text: str, limit: int, *, escape: bool = True) -> str:
    """``text`` (escaped for Slack) within ``limit`` characters, cut with an ellipsis where needed:
    at a character of the original text, so never inside a character or an escape."""
    whole = slack_escape(text) if escape else text
    if len(whole) <= limit:
        return whole
    out: list[str] = []
    used = 0
    for char in text:
        piece = slack_escape(char) if escape else char
        if used + len(piece) > limit - 1:
            break
        out.append(piece)
        used += len(piece)
    return "".join(out) + "…"


def _headline(notice: Notice) -> str:
    if notice.trigger == "frequency" and notice.window:
        return f"{_HEADLINES['frequency']}: {notice.window[0]} events in {notice.window[1]} min"
    return _HEADLINES[notice.trigger]


def slack_body(notice: Notice) -> dict[str, Any]:
    error, latest = notice.error, notice.latest
    url = error_url(notice.project, error, notice.base_url)
    headline = _headline(notice)
    where = f"{notice.project.path_with_namespace}"
    title = error.title or error.type
    facts = [
        f"*Events* {int(error.events_count or 0)}",
        f"*Users* {int(error.user_count or 0)}",
        f"*Status* {error.status}",
    ]
    for label, value in (
        ("Level", latest.level if latest else None),
        ("Environment", latest.environment if latest else None),
        ("Release", latest.release if latest else None),
    ):
        if value:
            facts.append(f"*{label}* {fit(value, 200)}")
    culprit = f"\n`{fit(error.culprit, 500)}`" if error.culprit else ""
    # Every piece from an event is cut and escaped on its own, so the whole stays far within
    # Slack's limits and the outer fit() below never has to cut (it is the guarantee, not the rule).
    # The link's URL is ours: the configured base and digits.
    section = f"*<{url}|{fit(title, 1000)}>*{culprit}"
    context = fit(f"{fit(where, 500)} · " + " · ".join(facts), SLACK_CONTEXT_MAX, escape=False)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": fit(headline, SLACK_HEADER_MAX, escape=False)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": fit(section, SLACK_SECTION_MAX, escape=False)}},
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": context}],
        },
    ]
    text = f"{headline} in {slack_escape(where)}: {fit(title, 1000)}"
    return {"text": fit(text, SLACK_TEXT_MAX, escape=False), "blocks": blocks}


def body(notice: Notice, payload_format: str) -> bytes:
    """The request body for a hook of ``payload_format``, as sent (and signed)."""
    shaped = slack_body(notice) if payload_format == "slack" else gitlab_body(notice)
    return json.dumps(shaped, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
