"""Connecting to Temporal the way the settings say: plain, TLS, mutual TLS or an API key.

Every process that talks to the configured server (CLI commands, the worker, the web server)
connects through :func:`connect`, so they all present the same credentials and fail with the
same message: one that says where and how Altaviz tried to connect, never the key itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode, TLSConfig

from altaviz.core.errors import ServiceError
from altaviz.core.settings import Settings, env_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConnectOptions:
    """The keyword arguments of ``Client.connect`` that the settings decide.

    ``tls`` and ``api_key`` are left out of the repr: the TLS config carries the client's
    private key, and either may end up in a log line or a traceback.
    """

    namespace: str
    tls: bool | TLSConfig = field(repr=False)
    api_key: str | None = field(repr=False)
    description: str
    """How the connection is secured, safe to print (e.g. ``TLS, client certificate``)."""


def connect_options(settings: Settings) -> ConnectOptions:
    """Build the connection arguments from the settings, reading the PEM files.

    TLS is on when ``temporal_tls`` says so or, unset, when any TLS file, server name or API
    key is given: an API key must never travel in clear by accident.

    Raises:
        ServiceError: a file became unreadable since :class:`Settings` checked it.
    """
    s = settings
    api_key = s.temporal_api_key.get_secret_value() if s.temporal_api_key else None
    custom = (s.temporal_tls_server_ca, s.temporal_tls_server_name, s.temporal_tls_client_cert)
    use_tls = s.temporal_tls if s.temporal_tls is not None else (
        any(v is not None for v in custom) or api_key is not None)
    tls: bool | TLSConfig = use_tls
    parts = ["TLS" if use_tls else "no TLS"]
    if use_tls and any(v is not None for v in custom):
        tls = TLSConfig(
            server_root_ca_cert=_read(s.temporal_tls_server_ca),
            domain=s.temporal_tls_server_name,
            client_cert=_read(s.temporal_tls_client_cert),
            client_private_key=_read(s.temporal_tls_client_key))
        if s.temporal_tls_server_ca is not None:
            parts.append(f"server CA {s.temporal_tls_server_ca}")
        if s.temporal_tls_server_name is not None:
            parts.append(f"server name {s.temporal_tls_server_name}")
        if s.temporal_tls_client_cert is not None:
            parts.append(f"client certificate {s.temporal_tls_client_cert}")
    if api_key is not None:
        parts.append("API key")
    return ConnectOptions(namespace=s.temporal_namespace, tls=tls, api_key=api_key,
                          description=", ".join(parts))


def _read(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ServiceError(f"cannot read {path}: {exc.strerror}") from None


async def connect(settings: Settings, address: str) -> Client:
    """A client of the Temporal server at ``address``, secured as the settings say.

    The address is an argument (not ``settings.temporal_address``) because with none
    configured the caller starts the embedded dev server and knows where it listens.

    Raises:
        ServiceError: the server cannot be reached, refuses the TLS handshake or the
            credentials; the message names the address and the TLS options and API key use,
            never the key.
    """
    options = connect_options(settings)
    try:
        client = await Client.connect(
            address, namespace=options.namespace, tls=options.tls, api_key=options.api_key,
            data_converter=pydantic_data_converter)
    except (RuntimeError, RPCError) as exc:
        reason = str(exc)
        if options.api_key:
            reason = reason.replace(options.api_key, "***")
        hint = _hint(exc, reason, options, settings)
        detail = f"{hint} ({reason})" if hint else reason
        raise ServiceError(f"cannot connect to Temporal at {address} "
                           f"({options.description}): {detail}") from None
    log.info("connected to Temporal at %s, namespace %s (%s)", address, options.namespace,
             options.description)
    return client


def _hint(exc: Exception, reason: str, options: ConnectOptions, settings: Settings) -> str:
    """How to fix the common failures, recognised in the client's error text (which names
    TLS problems the way rustls does); empty when none is recognised."""
    if isinstance(exc, RPCError) and exc.status in (RPCStatusCode.UNAUTHENTICATED,
                                                    RPCStatusCode.PERMISSION_DENIED):
        return (f"the server refused the credentials: check {env_name('temporal_api_key')} or "
                f"the client certificate, and that {env_name('temporal_namespace')} is theirs")
    if "UnknownIssuer" in reason:
        return (f"the server's certificate is not signed by a CA this client trusts: set "
                f"{env_name('temporal_tls_server_ca')} to the PEM file of the CA that signed it")
    if "NotValidForName" in reason:
        return (f"the server's certificate is not issued for this host: set "
                f"{env_name('temporal_tls_server_name')} to a name the certificate carries")
    if "InvalidContentType" in reason:
        return ("the server answered without TLS: check the port, or that this server serves "
                "TLS at all")
    # connected (and, with TLS, shook hands), then the first call broke off: the server hung up
    hung_up = "after connection" in reason and "transport" in reason.lower()
    if "CertificateRequired" in reason or (  # the alert, or a hang-up that raced it
            hung_up and options.tls is not False
            and settings.temporal_tls_client_cert is None):
        return (f"the server may require a client certificate: set "
                f"{env_name('temporal_tls_client_cert')} and "
                f"{env_name('temporal_tls_client_key')}")
    if hung_up and options.tls is False:
        return (f"the server may require TLS: set {env_name('temporal_tls')}=true, or "
                f"{env_name('temporal_tls_server_ca')} for a private CA")
    return ""
