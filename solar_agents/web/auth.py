"""Who may read the web view: with ``WEB_AUTH_TOKEN`` set, every page and API answers only a request that
carries the token, as ``Authorization: Bearer <token>`` (API clients, Prometheus) or as the session cookie
that a browser gets by opening any page once with ``?token=<token>`` (then sent on to the same page without
it). Without a token everything is open, as before.

One middleware guards everything the worker's web server serves, Faust's own pages included. A path is
exempt by adding it to ``ALWAYS_PUBLIC`` (or, for ``/metrics``, by ``WEB_METRICS_PUBLIC=true``). The decision
itself (``AccessPolicy.decide``) is pure; ``auth_middleware`` applies it to aiohttp's requests.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

if TYPE_CHECKING:
    from aiohttp import web

    from solar_agents.settings import Settings

# Paths served to anyone even with a token set (health checks belong here).
ALWAYS_PUBLIC: frozenset[str] = frozenset({"/healthz", "/readyz"})  # probes carry no token
METRICS_PATH = "/metrics"
COOKIE = "solar_agents_session"
QUERY = "token"
REFUSAL = (
    "authentication required: send the header 'Authorization: Bearer <WEB_AUTH_TOKEN>', or open "
    "/?token=<token> once in a browser"
)


class Decision(Enum):
    ALLOW = "allow"
    DENY = "deny"
    LOGIN = "login"  # a right ?token=: set the session cookie and send the browser on without it


@dataclass(frozen=True)
class AccessPolicy:
    token: SecretStr | None
    public: frozenset[str] = ALWAYS_PUBLIC

    @classmethod
    def of(cls, settings: Settings) -> AccessPolicy:
        public = ALWAYS_PUBLIC | ({METRICS_PATH} if settings.web_metrics_public else set())
        return cls(settings.web_auth_token, frozenset(public))

    def session(self) -> str:
        """The cookie's value: derived from the token (not the token itself), so it changes with it."""
        assert self.token is not None
        key = self.token.get_secret_value().encode()
        return hmac.new(key, b"solar_agents web session", hashlib.sha256).hexdigest()

    def _is_token(self, given: str | None) -> bool:
        assert self.token is not None
        return given is not None and hmac.compare_digest(
            given.encode(), self.token.get_secret_value().encode()
        )

    def decide(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        cookies: Mapping[str, str],
        query: Mapping[str, str],
    ) -> Decision:
        """What to do with a request, from its method, path, headers, cookies and query."""
        if self.token is None or (path.rstrip("/") or "/") in self.public:
            return Decision.ALLOW
        if QUERY in query:
            return (
                Decision.LOGIN
                if method in ("GET", "HEAD") and self._is_token(query[QUERY])
                else Decision.DENY
            )
        scheme, _, given = headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self._is_token(given.strip()):
            return Decision.ALLOW
        cookie = cookies.get(COOKIE)
        if cookie is not None and hmac.compare_digest(cookie.encode(), self.session().encode()):
            return Decision.ALLOW
        return Decision.DENY

    def bearer(self) -> dict[str, str]:
        """The header a worker sends when it forwards a request to another worker."""
        return {} if self.token is None else {"Authorization": f"Bearer {self.token.get_secret_value()}"}


Handler = Callable[["web.Request"], Awaitable["web.StreamResponse"]]


def auth_middleware(policy: AccessPolicy) -> Any:
    """An aiohttp middleware applying ``policy`` to every request of the web server."""
    from aiohttp import web

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        decision = policy.decide(
            request.method, request.path, request.headers, request.cookies, request.query
        )
        if decision is Decision.ALLOW:
            return await handler(request)
        headers = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
        if decision is Decision.LOGIN:
            location = str(
                request.rel_url.with_query([(k, v) for k, v in request.query.items() if k != QUERY])
            )
            response = web.Response(status=303, headers={**headers, "Location": location})
            response.set_cookie(
                COOKIE, policy.session(), httponly=True, samesite="Strict", secure=request.secure, path="/"
            )
            return response
        return web.json_response(
            {"error": REFUSAL},
            status=401,
            headers={**headers, "WWW-Authenticate": 'Bearer realm="solar_agents"'},
        )

    return guard
