"""FAKE Globus Auth for tests (not the Globus service).

OAuth2 token grants (client_credentials, authorization_code with PKCE, refresh_token), an authorize
endpoint whose fake user approves at once, revocation, introspection, OIDC discovery + JWK, id_tokens
signed with a key made at start, userinfo, identities and consents; enough for globus-sdk's
GlobusApp (UserApp, ClientApp) and IDTokenDecoder to work unmodified.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from pilot_globus.testing._common import (
    AUTH_RS,
    TRANSFER_RS,
    TRANSFER_SCOPE,
    ApiError,
    ParsedScope,
    Reply,
    Request,
    auth_error,
    data_access_collection,
    json_reply,
    parse_scopes,
    resource_server_of,
    utcnow,
)

USER_ID = "5d4e3f2a-1b0c-4d9e-8f7a-6b5c4d3e2f1a"
USER_NAME = "fakeuser@example.org"
SIGNING_ALG = "RS512"


@dataclass
class AccessToken:
    """What the fake remembers of an access token."""

    token: str
    client_id: str
    identity_id: str
    resource_server: str
    scopes: tuple[str, ...]
    data_access: frozenset[str]
    expires_at: float
    refresh_token: str | None = None

    @property
    def expired(self) -> bool:
        """True once the token's lifetime is over (or ``expire_access_tokens`` was called)."""
        return time.time() >= self.expires_at


@dataclass
class _RefreshGrant:
    token: str
    client_id: str
    identity_id: str
    scopes: tuple[ParsedScope, ...]


@dataclass
class _CodeGrant:
    client_id: str
    redirect_uri: str
    challenge: str | None
    challenge_method: str
    scopes: tuple[ParsedScope, ...]
    offline: bool


class AuthService:
    """State and request handling of the fake Auth service."""

    def __init__(
        self,
        lock: threading.RLock,
        issuer: str,
        collections: Mapping[str, object],
        lifetime: Callable[[], int],
        signing_key: rsa.RSAPrivateKey,
    ) -> None:
        self._lock = lock
        self.issuer = issuer
        self._collections = collections
        self._lifetime = lifetime
        self._key = signing_key
        self._kid = secrets.token_hex(8)
        self.clients: dict[str, str | None] = {}
        self.access_tokens: dict[str, AccessToken] = {}
        self._refresh: dict[str, _RefreshGrant] = {}
        self._codes: dict[str, _CodeGrant] = {}
        self.consents: dict[str, list[dict[str, Any]]] = {}
        self._consent_ids = 1000

    # -- public helpers --------------------------------------------------------------------
    def register(self, secret: str | None) -> str:
        """Register a client (native when ``secret`` is None); return its id."""
        client_id = str(uuid.uuid4())
        with self._lock:
            self.clients[client_id] = secret
        return client_id

    def lookup(self, token: str | None) -> AccessToken | None:
        """The access token record, or None when unknown/revoked."""
        if not token:
            return None
        with self._lock:
            return self.access_tokens.get(token)

    def expire_all(self) -> None:
        """Expire every access token issued so far."""
        with self._lock:
            for record in self.access_tokens.values():
                record.expires_at = time.time() - 1

    # -- dispatch -----------------------------------------------------------------------------
    def handle(self, req: Request) -> Reply:
        """Answer one request to ``/auth/<path>``."""
        path = req.path.rstrip("/") or "/"
        if req.method == "POST" and path == "/v2/oauth2/token":
            return self._token(req)
        if req.method == "GET" and path == "/v2/oauth2/authorize":
            return self._authorize(req)
        if req.method == "POST" and path == "/v2/oauth2/token/revoke":
            return self._revoke(req)
        if req.method == "POST" and path == "/v2/oauth2/token/introspect":
            return self._introspect(req)
        if req.method == "GET" and path == "/.well-known/openid-configuration":
            return json_reply(200, self._oidc_config())
        if req.method == "GET" and path == "/jwk.json":
            jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self._key.public_key(), as_dict=True)
            jwk.update({"alg": SIGNING_ALG, "use": "sig", "kid": self._kid})
            return json_reply(200, {"keys": [jwk]})
        if req.method == "GET" and path == "/v2/oauth2/userinfo":
            record = self._bearer(req)
            return json_reply(200, self._userinfo(record.identity_id))
        if req.method == "GET" and path == "/v2/api/identities":
            self._bearer(req)
            ids = [i for i in req.query.get("ids", "").split(",") if i]
            return json_reply(200, {"identities": [self._identity(i) for i in ids if self._known_identity(i)]})
        parts = path.split("/")
        if req.method == "GET" and len(parts) == 6 and parts[1:4] == ["v2", "api", "identities"] \
                and parts[5] == "consents":
            record = self._bearer(req)
            if record.identity_id != parts[4]:
                raise auth_error(403, "forbidden", "May only view your own consents")
            with self._lock:
                return json_reply(200, {"consents": [dict(c) for c in self.consents.get(parts[4], [])]})
        raise auth_error(404, "not_found", f"No such resource {req.path}")

    # -- endpoints ------------------------------------------------------------------------------
    def _oidc_config(self) -> dict[str, Any]:
        base = self.issuer
        return {
            "issuer": base,
            "authorization_endpoint": f"{base}/v2/oauth2/authorize",
            "token_endpoint": f"{base}/v2/oauth2/token",
            "revocation_endpoint": f"{base}/v2/oauth2/token/revoke",
            "userinfo_endpoint": f"{base}/v2/oauth2/userinfo",
            "jwks_uri": f"{base}/jwk.json",
            "response_types_supported": ["code", "token", "token id_token", "id_token"],
            "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [SIGNING_ALG],
            "scopes_supported": ["openid", "email", "profile"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic"],
            "claims_supported": ["at_hash", "aud", "email", "exp", "name", "nonce", "preferred_username",
                                 "iat", "iss", "sub", "identity_set", "organization"],
            "code_challenge_methods_supported": ["S256", "plain"],
        }

    def _authorize(self, req: Request) -> Reply:
        q = req.query
        client_id = q.get("client_id", "")
        with self._lock:
            known = client_id in self.clients
        if not known:
            raise auth_error(400, "invalid_client", "Unknown client_id")
        if q.get("response_type", "code") != "code":
            raise auth_error(400, "unsupported_response_type", "Only response_type=code is supported")
        if not q.get("redirect_uri"):
            raise auth_error(400, "invalid_request", "redirect_uri is required")
        scopes = self._parse(q.get("scope", ""))
        method = q.get("code_challenge_method", "plain" if q.get("code_challenge") else "")
        if q.get("code_challenge") and method not in ("S256", "plain"):
            raise auth_error(400, "invalid_request", "Unsupported code_challenge_method")
        code = secrets.token_urlsafe(24)
        with self._lock:
            if self.clients[client_id] is None and not q.get("code_challenge"):
                raise auth_error(400, "invalid_request", "Native clients must use PKCE (code_challenge)")
            self._codes[code] = _CodeGrant(
                client_id, q["redirect_uri"], q.get("code_challenge"), method, tuple(scopes),
                q.get("access_type") == "offline",
            )
            self._record_consents(USER_ID, client_id, scopes)
        text = (
            "FakeGlobus Auth (a fake for tests, not Globus): the fake user approved the request.\n"
            f"identity: {USER_NAME} ({USER_ID})\n"
            f"code: {code}\n"
        )
        return Reply(200, text.encode(), {"Content-Type": "text/plain; charset=utf-8"})

    def _client_auth(self, req: Request, form: Mapping[str, str]) -> str:
        header = req.headers.get("Authorization", "")
        client_id, secret = form.get("client_id", ""), None
        if header[:6].lower() == "basic ":
            try:
                decoded = base64.b64decode(header[6:].strip()).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise auth_error(401, "invalid_client", "Malformed Basic authorization") from None
            client_id, _, raw = decoded.partition(":")
            secret = urllib.parse.unquote(raw)
            client_id = urllib.parse.unquote(client_id)
        with self._lock:
            if client_id not in self.clients:
                raise auth_error(401, "invalid_client", "Unknown client")
            expected = self.clients[client_id]
        if expected is not None and not (secret and secrets.compare_digest(secret, expected)):
            raise auth_error(401, "invalid_client", "Bad client credentials")
        return client_id

    def _token(self, req: Request) -> Reply:
        form = dict(urllib.parse.parse_qsl(req.body.decode("utf-8", "replace"), keep_blank_values=True))
        client_id = self._client_auth(req, form)
        grant = form.get("grant_type", "")
        with self._lock:
            if grant == "client_credentials":
                if self.clients[client_id] is None:
                    raise auth_error(400, "unauthorized_client", "Native clients cannot use client_credentials")
                scopes = self._parse(form.get("scope", ""))
                self._record_consents(client_id, client_id, scopes)
                return json_reply(200, self._issue(client_id, client_id, scopes, offline=False))
            if grant == "authorization_code":
                code = self._codes.pop(form.get("code", ""), None)
                if code is None or code.client_id != client_id:
                    raise auth_error(400, "invalid_grant", "Unknown or used authorization code")
                if form.get("redirect_uri") != code.redirect_uri:
                    raise auth_error(400, "invalid_grant", "redirect_uri does not match the authorize request")
                if code.challenge is not None and not _pkce_ok(form.get("code_verifier", ""), code):
                    raise auth_error(400, "invalid_grant", "code_verifier does not match the code_challenge")
                return json_reply(200, self._issue(client_id, USER_ID, list(code.scopes), offline=code.offline))
            if grant == "refresh_token":
                refresh = self._refresh.get(form.get("refresh_token", ""))
                if refresh is None or refresh.client_id != client_id:
                    raise auth_error(400, "invalid_grant", "Unknown or revoked refresh token")
                doc = self._issue(client_id, refresh.identity_id, list(refresh.scopes), offline=False, refresh=refresh)
                return json_reply(200, doc)
        raise auth_error(400, "unsupported_grant_type", f"Unsupported grant_type {grant!r}")

    def _revoke(self, req: Request) -> Reply:
        form = dict(urllib.parse.parse_qsl(req.body.decode("utf-8", "replace"), keep_blank_values=True))
        self._client_auth(req, form)
        token = form.get("token", "")
        with self._lock:
            self.access_tokens.pop(token, None)
            if self._refresh.pop(token, None) is not None:
                for key in [k for k, v in self.access_tokens.items() if v.refresh_token == token]:
                    del self.access_tokens[key]
        return json_reply(200, {"active": False})

    def _introspect(self, req: Request) -> Reply:
        form = dict(urllib.parse.parse_qsl(req.body.decode("utf-8", "replace"), keep_blank_values=True))
        self._client_auth(req, form)
        record = self.lookup(form.get("token"))
        if record is None or record.expired:
            return json_reply(200, {"active": False})
        return json_reply(200, {
            "active": True, "scope": " ".join(record.scopes), "client_id": record.client_id,
            "sub": record.identity_id, "username": self._username(record.identity_id),
            "aud": [record.resource_server], "exp": int(record.expires_at), "iss": self.issuer,
            "identity_set": [record.identity_id], "token_type": "Bearer",
        })

    # -- helpers ------------------------------------------------------------------------------------
    def _bearer(self, req: Request) -> AccessToken:
        record = self.lookup(req.bearer())
        if record is None or record.expired or record.resource_server != AUTH_RS:
            raise auth_error(401, "unauthorized", "Call must be authenticated")
        return record

    def _parse(self, text: str) -> list[ParsedScope]:
        try:
            scopes = parse_scopes(text)
        except ValueError as exc:
            raise auth_error(400, "invalid_scope", str(exc)) from None
        if not scopes:
            raise auth_error(400, "invalid_scope", "No scopes requested")
        for scope in scopes:
            if resource_server_of(scope.scope, self._collections) is None:
                raise ApiError(400, {"error": "invalid_scope", "error_description": f"Unknown scope {scope.scope}"})
            for dep in scope.dependencies:
                coll = data_access_collection(dep.scope)
                if scope.scope != TRANSFER_SCOPE or coll is None or coll not in self._collections or dep.dependencies:
                    raise ApiError(400, {"error": "invalid_scope", "error_description": f"Unknown scope {dep.scope}"})
        return scopes

    def _record_consents(self, identity: str, client_id: str, scopes: list[ParsedScope]) -> None:
        now = utcnow().isoformat()
        consents = self.consents.setdefault(identity, [])

        def find_or_add(name: str, parent: list[int]) -> list[int]:
            for consent in consents:
                if consent["client"] == client_id and consent["scope_name"] == name \
                        and consent["dependency_path"][:-1] == parent:
                    return list(consent["dependency_path"])
            self._consent_ids += 1
            path = [*parent, self._consent_ids]
            consents.append({
                "id": self._consent_ids, "client": client_id, "scope": str(uuid.uuid5(uuid.NAMESPACE_URL, name)),
                "scope_name": name, "effective_identity": identity, "dependency_path": path, "created": now,
                "updated": now, "last_used": now, "status": "approved", "allows_refresh": True,
                "auto_approved": False, "atomically_revocable": len(path) > 1,
            })
            return path

        for scope in scopes:
            root = find_or_add(scope.scope, [])
            for dep in scope.dependencies:
                find_or_add(dep.scope, root)

    def consented_collections(self, identity: str, client_id: str) -> frozenset[str]:
        """Collections whose data_access the identity consented to under the client's transfer scope."""
        with self._lock:
            consents = self.consents.get(identity, [])
            roots = {c["id"] for c in consents if c["client"] == client_id and c["scope_name"] == TRANSFER_SCOPE
                     and len(c["dependency_path"]) == 1}
            out = set()
            for consent in consents:
                coll = data_access_collection(consent["scope_name"])
                path = consent["dependency_path"]
                if coll and len(path) == 2 and path[0] in roots and consent["status"] == "approved":
                    out.add(coll)
            return frozenset(out)

    def _issue(
        self, client_id: str, identity: str, scopes: list[ParsedScope], *, offline: bool,
        refresh: _RefreshGrant | None = None,
    ) -> dict[str, Any]:
        by_rs: dict[str, list[ParsedScope]] = {}
        for scope in scopes:
            rs = resource_server_of(scope.scope, self._collections)
            if rs is None:
                raise ApiError(400, {"error": "invalid_scope", "error_description": f"Unknown scope {scope.scope}"})
            by_rs.setdefault(rs, []).append(scope)
        docs = []
        for rs, rs_scopes in by_rs.items():
            names = tuple(dict.fromkeys(s.scope for s in rs_scopes))
            access = secrets.token_urlsafe(32)
            lifetime = self._lifetime()
            refresh_token = refresh.token if refresh is not None else None
            if refresh is None and offline:
                refresh_token = secrets.token_urlsafe(40)
                self._refresh[refresh_token] = _RefreshGrant(refresh_token, client_id, identity, tuple(rs_scopes))
            data_access = self.consented_collections(identity, client_id) if rs == TRANSFER_RS else frozenset()
            self.access_tokens[access] = AccessToken(
                access, client_id, identity, rs, names, data_access, time.time() + lifetime, refresh_token
            )
            doc: dict[str, Any] = {
                "access_token": access, "expires_in": lifetime, "resource_server": rs, "scope": " ".join(names),
                "token_type": "Bearer", "refresh_token": refresh_token, "state": "_default",
            }
            if rs == AUTH_RS and "openid" in names:
                doc["id_token"] = self._id_token(client_id, identity, lifetime)
            docs.append(doc)
        docs.sort(key=lambda d: d["resource_server"] != AUTH_RS)
        top = dict(docs[0])
        top["other_tokens"] = docs[1:]
        return top

    def _id_token(self, client_id: str, identity: str, lifetime: int) -> str:
        now = int(time.time())
        info = self._userinfo(identity)
        claims = {"iss": self.issuer, "aud": client_id, "iat": now, "exp": now + lifetime,
                  "last_authentication": now, **info}
        return jwt.encode(claims, self._key, algorithm=SIGNING_ALG, headers={"kid": self._kid})

    def _known_identity(self, identity: str) -> bool:
        with self._lock:
            return identity == USER_ID or self.clients.get(identity, None) is not None

    def _username(self, identity: str) -> str:
        return USER_NAME if identity == USER_ID else f"{identity}@clients.auth.globus.org"

    def _identity(self, identity: str) -> dict[str, Any]:
        user = identity == USER_ID
        return {
            "id": identity, "sub": identity, "username": self._username(identity),
            "name": "Fake User" if user else "FakeGlobus client", "email": USER_NAME if user else None,
            "organization": "FakeGlobus", "identity_provider": str(uuid.uuid5(uuid.NAMESPACE_DNS, "example.org")),
            "identity_provider_display_name": "FakeGlobus IdP", "status": "used",
            "identity_type": "login" if user else "client",
        }

    def _userinfo(self, identity: str) -> dict[str, Any]:
        ident = self._identity(identity)
        return {
            "sub": identity, "preferred_username": ident["username"], "name": ident["name"],
            "email": ident["email"], "organization": ident["organization"],
            "identity_provider": ident["identity_provider"],
            "identity_provider_display_name": ident["identity_provider_display_name"],
            "identity_set": [{k: ident[k] for k in ("sub", "username", "name", "email", "organization",
                                                   "identity_provider", "identity_provider_display_name")}],
        }


def _pkce_ok(verifier: str, code: _CodeGrant) -> bool:
    if code.challenge_method == "plain":
        return bool(verifier) and secrets.compare_digest(verifier, code.challenge or "")
    digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return secrets.compare_digest(digest, code.challenge or "")
