"""What an alert looks like on each route: the generic JSON, Slack's message, a Teams card, an email.

* Slack incoming webhooks take ``{"text": ..., "blocks": [...]}``: ``text`` is the notification fallback, the
  blocks (a header, the message as mrkdwn, a context line) are what the channel shows.
* Microsoft Teams: Workflows webhooks (Power Automate, the replacement for Office 365 connectors) take a
  ``message`` whose attachment is an Adaptive Card (``application/vnd.microsoft.card.adaptive``); the legacy
  connector webhooks take a ``MessageCard`` (``@type``, ``summary``, ``themeColor``, ``sections`` with ``facts``).
* Email: a plain-text message with the alert's fields, the subject ``<prefix> [<SEVERITY>] <kind>: <message>``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import msgspec

from bus.messages import Alert

#: Slack's limits: a header's plain text 150 characters, a section's text 3,000.
SLACK_HEADER_MAX = 150
SLACK_TEXT_MAX = 3000
SEVERITY_COLOURS = {"info": "2EB67D", "warning": "ECB22E", "critical": "E01E5A"}
SEVERITY_EMOJI = {"info": ":information_source:", "warning": ":warning:", "critical": ":rotating_light:"}
ADAPTIVE_STYLE = {"info": "good", "warning": "warning", "critical": "attention"}


def alert_json(alert: Alert, **extra: Any) -> bytes:
    """The generic payload: the alert's fields as JSON (what ``alert_command`` and webhook routes receive)."""
    payload = msgspec.to_builtins(alert)
    payload.update(extra)
    return json.dumps(payload, sort_keys=True).encode()


def _when(alert: Alert) -> str:
    if not alert.wall_ns:
        return ""
    return datetime.fromtimestamp(alert.wall_ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _title(alert: Alert) -> str:
    return f"[{alert.severity.upper()}] {alert.kind}"


def _facts(alert: Alert) -> list[tuple[str, str]]:
    facts = [("severity", alert.severity), ("kind", alert.kind), ("source", alert.source or "?")]
    if alert.wall_ns:
        facts.append(("time", _when(alert)))
    facts += sorted((k, v) for k, v in alert.detail.items() if k not in ("hooked", "audited"))
    return facts


def slack_payload(alert: Alert) -> dict[str, Any]:
    context = " | ".join(f"*{k}* {v}" for k, v in _facts(alert) if k in ("source", "time")) or alert.kind
    detail = "\n".join(f"*{k}*: {v}" for k, v in _facts(alert)[3:] if k != "time")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": f"{_title(alert)}"[:SLACK_HEADER_MAX]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": alert.message[:SLACK_TEXT_MAX] or alert.kind}},
    ]
    if detail:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": detail[:SLACK_TEXT_MAX]}})
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context[:SLACK_TEXT_MAX]}]})
    return {
        "text": f"{SEVERITY_EMOJI.get(alert.severity, '')} {_title(alert)}: {alert.message}".strip(),
        "blocks": blocks,
    }


def teams_payload(alert: Alert, card: str = "adaptive") -> dict[str, Any]:
    if card == "messagecard":
        return {
            "@type": "MessageCard",
            "@context": "https://schema.org/extensions",
            "summary": f"{_title(alert)}: {alert.message}"[:200],
            "themeColor": SEVERITY_COLOURS.get(alert.severity, "808080"),
            "title": f"Khazad {_title(alert)}",
            "text": alert.message,
            "sections": [{"facts": [{"name": k, "value": v} for k, v in _facts(alert)]}],
        }
    content = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "msteams": {"width": "Full"},
        "body": [
            {
                "type": "TextBlock",
                "text": f"Khazad {_title(alert)}",
                "weight": "Bolder",
                "size": "Medium",
                "color": ADAPTIVE_STYLE.get(alert.severity, "default"),
                "wrap": True,
            },
            {"type": "TextBlock", "text": alert.message or alert.kind, "wrap": True},
            {"type": "FactSet", "facts": [{"title": k, "value": v} for k, v in _facts(alert)]},
        ],
    }
    return {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": content}
        ],
    }


def email_message(alert: Alert, sender: str, recipients: list[str], prefix: str) -> EmailMessage:
    msg = EmailMessage()
    subject = f"{prefix} {_title(alert)}: {alert.message}".strip()
    msg["Subject"] = " ".join(subject.split())[:200]
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    body = [alert.message, ""] + [f"{k:>12}: {v}" for k, v in _facts(alert)]
    msg.set_content("\n".join(body) + "\n")
    return msg
