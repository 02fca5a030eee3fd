"""Who is asking: the role a request's token gives (contract 2e, `CALLPULSE_SUPERVISOR_TOKEN`).

Roles:
- `supervisor`: holds `CALLPULSE_SUPERVISOR_TOKEN`; may read everything, acknowledge, snooze and read the audit log.
- `viewer`: holds `CALLPULSE_TOKEN` (or no token is needed) while a supervisor token is set: read-only.
- `operator`: no supervisor token is set, so whoever gets in (with `CALLPULSE_TOKEN`, or anyone when that is
  unset too) may acknowledge and snooze, as in the first edition.

The token comes from `?token=` or `Authorization: Bearer <token>` (the header wins).
"""

from __future__ import annotations

import hmac
from typing import Literal
from urllib.parse import parse_qs, urlsplit

from websockets.http11 import Request

from callpulse.settings import Settings

Role = Literal["supervisor", "viewer", "operator"]
ROLES: tuple[Role, ...] = ("supervisor", "viewer", "operator")


def given_token(request: Request) -> str:
    """The token a request carries: the Bearer header, else `?token=`, else ''."""
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        return auth[7:]
    return (parse_qs(urlsplit(request.path).query).get("token") or [""])[0]


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def role_of(settings: Settings, request: Request) -> Role | None:
    """The role `request` has under `settings`, or None when its token opens nothing."""
    given = given_token(request)
    if settings.supervisor_token and _same(given, settings.supervisor_token):
        return "supervisor"
    if settings.token and not _same(given, settings.token):
        return None
    return "viewer" if settings.supervisor_token else "operator"


def may_act(role: Role) -> bool:
    """True when `role` may acknowledge alerts and snooze KPIs."""
    return role != "viewer"


REFUSAL = (
    "read-only: acknowledging and snoozing need the supervisor token (CALLPULSE_SUPERVISOR_TOKEN); "
    "open the board with ?token=<supervisor token>"
)
