"""Who may watch: loopback-only by default, a token for any other address, and checks of Host and Origin;
and TLS, for the server (``kmq live --tls-cert``) and for a viewer that trusts its own certificate
(``kmq watch --cafile``)."""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
import ssl
from urllib.parse import urlsplit

from kmq.errors import InputError
from kmq.media.files import read_input_bytes

__all__ = ["is_loopback", "new_token", "check_token_text", "Access", "tls_context", "client_tls"]

#: Largest certificate or key file read (PEM files of a few certificates are a few kilobytes).
PEM_LIMIT = 1 << 20

_LOOPBACK_NAMES = {"localhost", "ip6-localhost", "ip6-loopback"}


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 with or without brackets) is this machine only.

    Examples
    --------
    >>> [is_loopback(h) for h in ("127.0.0.1", "::1", "[::1]", "localhost", "0.0.0.0", "example.org")]
    [True, True, True, True, False, False]
    """
    host = host.strip().lower().strip("[]")
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    """A fresh random token (128 bits, URL-safe)."""
    return secrets.token_urlsafe(16)


def check_token_text(token: str) -> str:
    """Validate a token given on the command line.

    Raises
    ------
    kmq.errors.InputError
        Shorter than 8 characters, or characters that do not survive a URL unescaped.
    """
    if len(token) < 8:
        raise InputError("a token must have at least 8 characters")
    if not all(ch.isalnum() or ch in "-_.~" for ch in token):
        raise InputError("a token may hold letters, digits and - _ . ~ only")
    return token


class Access:
    """The access rules of one server.

    With a token, a request must carry it (``?token=`` or ``Authorization: Bearer``). Without one
    the server is bound to loopback, and requests must also name a loopback host (so that a web
    page cannot reach the stream through a DNS name re-pointed at 127.0.0.1) and, from a browser,
    come from a page of a loopback origin.

    Parameters
    ----------
    token : str or None
        The token, when one is required.
    """

    def __init__(self, token: str | None) -> None:
        self.token = token

    def problem(
        self, query_token: str | None, authorization: str | None, host: str | None, origin: str | None
    ) -> tuple[int, str] | None:
        """Why a request is refused, as (HTTP status, reason); None when it may proceed."""
        if self.token is not None:
            given = query_token
            if given is None and authorization and authorization.lower().startswith("bearer "):
                given = authorization[7:].strip()
            if not given:
                return 401, "this stream needs a token (?token=...)"
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                return 403, "wrong token"
            return None
        if host is None or not is_loopback(_host_name(host)):
            return 403, "this server answers requests for a loopback host only"
        if origin is not None and not is_loopback(urlsplit(origin).hostname or ""):
            return 403, "pages of other origins may not open this stream"
        return None


def _host_name(host: str) -> str:
    """The name part of a Host header (``[::1]:8765`` -> ``::1``, ``localhost:80`` -> ``localhost``)."""
    host = host.strip()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def tls_context(cert: str | os.PathLike | None, key: str | os.PathLike | None) -> ssl.SSLContext | None:
    """A server's TLS context from a PEM certificate chain and key; None without a certificate.

    Raises
    ------
    kmq.errors.InputError
        A key without a certificate, or files that cannot be read or do not make a certificate
        and its key.
    """
    if cert is None:
        if key is not None:
            raise InputError("a TLS key needs its certificate: give --tls-cert too")
        return None
    for path in (cert, key):
        if path is not None:
            read_input_bytes(path, limit=PEM_LIMIT)  # readable, a file, and small: else one clear line
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError:
        what = f"{cert} and {key} are" if key is not None else f"{cert} is"
        raise InputError(f"{what} not a PEM certificate chain and its private key") from None
    return context


def client_tls(cafile: str | os.PathLike | None) -> ssl.SSLContext | None:
    """A client's TLS context trusting the PEM certificates in ``cafile``; None (the system's CAs) without one.

    Raises
    ------
    kmq.errors.InputError
        A file that cannot be read or holds no PEM certificate.
    """
    if cafile is None:
        return None
    pem = read_input_bytes(cafile, limit=PEM_LIMIT).decode("ascii", "replace")
    try:
        return ssl.create_default_context(cadata=pem)
    except ssl.SSLError:
        raise InputError(f"{cafile} holds no PEM certificate to trust") from None
