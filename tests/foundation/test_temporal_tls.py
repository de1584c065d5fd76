"""An external Temporal server over TLS, mutual TLS and with an API key.

The pinned CLI's dev server serves plain gRPC only (``temporal server start-dev`` has no TLS
flags, checked below), so the TLS tests put a TLS-terminating proxy in front of it, as a load
balancer or ingress sits in front of a Temporal frontend: the client's handshake, certificate
checks and client certificate are real; only the last hop to the dev server is plain. The
certificates come from the ``openssl`` command with a throw-away CA.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.service import TLSConfig
from temporalio.testing import WorkflowEnvironment

from altaviz.app.context import App
from altaviz.core.errors import ConfigError, ServiceError
from altaviz.core.settings import ENV_HELP, Settings, load_settings
from altaviz.core.temporal_connect import connect, connect_options
from tests.conftest import find_executable_or_skip

SERVER_NAME = "temporal.internal"  # the only name in the server certificate
API_KEY = "tmprl-test-key-7d41c0ffee"


@dataclass(frozen=True)
class Pki:
    """A throw-away CA, a server certificate for SERVER_NAME and a client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing here


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _make_ca(folder: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
             "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=folder)


def _make_leaf(folder: Path, name: str, extensions: str) -> None:
    (folder / f"{name}.ext").write_text(extensions)
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=folder)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
             "-extfile", f"{name}.ext", cwd=folder)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    d = tmp_path_factory.mktemp("pki")
    _make_ca(d, "ca")
    _make_ca(d, "other")
    _make_leaf(d, "server", f"subjectAltName=DNS:{SERVER_NAME}\nextendedKeyUsage=serverAuth\n")
    _make_leaf(d, "client", "subjectAltName=DNS:altaviz-worker\nextendedKeyUsage=clientAuth\n")
    return Pki(ca=d / "ca.pem", server_cert=d / "server.pem", server_key=d / "server.key",
               client_cert=d / "client.pem", client_key=d / "client.key",
               other_ca=d / "other.pem")


class TlsProxy:
    """Terminates TLS (optionally requiring a client certificate) and relays to a plain port."""

    def __init__(self, pki: Pki, upstream_port: int, *, require_client_cert: bool) -> None:
        self.upstream_port = upstream_port
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(pki.server_cert, pki.server_key)
        self.ctx.set_alpn_protocols(["h2"])  # gRPC clients insist on HTTP/2
        if require_client_cert:
            self.ctx.load_verify_locations(pki.ca)
            self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.client_subjects: list[Any] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"127.0.0.1:{port}"

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(self._relay(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # TLS through memory buffers rather than start_tls: when the handshake fails, asyncio
        # drops the connection without the alert OpenSSL wrote, and the client would then see
        # a bare hang-up instead of what a real server tells it (e.g. certificate required).
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = self.ctx.wrap_bio(incoming, outgoing, server_side=True)
        up_writer: asyncio.StreamWriter | None = None
        try:
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    writer.write(outgoing.read())
                    await writer.drain()
                    data = await reader.read(65536)
                    if not data:
                        return
                    incoming.write(data)
                except ssl.SSLError:
                    writer.write(outgoing.read())  # the alert: why the handshake failed
                    await writer.drain()
                    return
            writer.write(outgoing.read())
            peer = tls.getpeercert()
            if peer:
                self.client_subjects.append(peer["subject"])
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            await asyncio.gather(_decrypt(reader, tls, incoming, outgoing, writer, up_writer),
                                 _encrypt(up_reader, tls, outgoing, writer))
        except (ConnectionError, OSError):
            pass
        finally:
            for w in (writer, up_writer):
                if w is not None:
                    w.close()
                    with contextlib.suppress(Exception):
                        await w.wait_closed()


async def _decrypt(reader: asyncio.StreamReader, tls: ssl.SSLObject, incoming: ssl.MemoryBIO,
                   outgoing: ssl.MemoryBIO, writer: asyncio.StreamWriter,
                   up_writer: asyncio.StreamWriter) -> None:
    """Client to server: TLS records in, plain bytes out."""
    try:
        while data := await reader.read(65536):
            incoming.write(data)
            while True:
                try:
                    chunk = tls.read(65536)
                except ssl.SSLWantReadError:
                    break
                if not chunk:
                    return
                up_writer.write(chunk)
            writer.write(outgoing.read())  # post-handshake messages, if any
            await up_writer.drain()
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    finally:
        up_writer.close()


async def _encrypt(up_reader: asyncio.StreamReader, tls: ssl.SSLObject, outgoing: ssl.MemoryBIO,
                   writer: asyncio.StreamWriter) -> None:
    """Server to client: plain bytes in, TLS records out."""
    try:
        while data := await up_reader.read(65536):
            tls.write(data)
            writer.write(outgoing.read())
            await writer.drain()
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    finally:
        writer.close()


@pytest.fixture(scope="module")
async def dev_server() -> AsyncIterator[str]:
    """A plain Temporal dev server (the CLI's); yields its address."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=find_executable_or_skip("temporal"))
    try:
        yield env.client.service_client.config.target_host
    finally:
        await env.shutdown()


async def _proxy(pki: Pki, dev_server: str,
                 require_client_cert: bool) -> AsyncIterator[tuple[str, TlsProxy]]:
    proxy = TlsProxy(pki, int(dev_server.rsplit(":", 1)[1]),
                     require_client_cert=require_client_cert)
    address = await proxy.start()
    yield address, proxy
    await proxy.close()


@pytest.fixture
async def tls_proxy(pki: Pki, dev_server: str) -> AsyncIterator[tuple[str, TlsProxy]]:
    """A TLS front of the dev server; yields its address and the proxy."""
    async for pair in _proxy(pki, dev_server, require_client_cert=False):
        yield pair


@pytest.fixture
async def mtls_proxy(pki: Pki, dev_server: str) -> AsyncIterator[tuple[str, TlsProxy]]:
    """A TLS front of the dev server that requires a client certificate signed by the CA."""
    async for pair in _proxy(pki, dev_server, require_client_cert=True):
        yield pair


def _settings(address: str, **values: Any) -> Settings:
    return Settings(temporal_address=address, **values)


async def _describe(client: Any) -> str:
    resp = await client.workflow_service.describe_namespace(
        DescribeNamespaceRequest(namespace="default"))
    return str(resp.namespace_info.name)


# --- the dev server cannot serve TLS itself -----------------------------------------------------

def test_dev_server_has_no_tls_flags() -> None:
    """If a later CLI adds them, these tests should use them instead of the proxy."""
    temporal = find_executable_or_skip("temporal")
    out = subprocess.run([temporal, "server", "start-dev", "--help"], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert "tls" not in out.lower() and "--cert" not in out.lower()


# --- real handshakes --------------------------------------------------------------------------

async def test_tls_with_the_server_ca_connects(
    pki: Pki, tls_proxy: tuple[str, TlsProxy]
) -> None:
    address, _ = tls_proxy
    client = await connect(_settings(address, temporal_tls_server_ca=pki.ca,
                                     temporal_tls_server_name=SERVER_NAME), address)
    assert await _describe(client) == "default"


async def test_tls_without_the_server_ca_is_refused(
    pki: Pki, tls_proxy: tuple[str, TlsProxy]
) -> None:
    address, _ = tls_proxy
    for values in ({"temporal_tls": True, "temporal_tls_server_name": SERVER_NAME},  # system CAs
                   {"temporal_tls_server_ca": pki.other_ca,
                    "temporal_tls_server_name": SERVER_NAME}):
        with pytest.raises(ServiceError) as err:
            await connect(_settings(address, **values), address)
        msg = str(err.value)
        assert msg.startswith(f"cannot connect to Temporal at {address} (TLS")
        assert ("the server's certificate is not signed by a CA this client trusts: set "
                "ALTAVIZ_TEMPORAL_TLS_SERVER_CA") in msg
        assert "InvalidCertificate(UnknownIssuer)" in msg


async def test_server_name_is_what_the_certificate_is_checked_against(
    pki: Pki, tls_proxy: tuple[str, TlsProxy]
) -> None:
    address, _ = tls_proxy
    with pytest.raises(ServiceError) as err:
        await connect(_settings(address, temporal_tls_server_ca=pki.ca), address)
    assert f"at {address} (TLS, server CA {pki.ca}): the server's certificate is not issued " \
           "for this host: set ALTAVIZ_TEMPORAL_TLS_SERVER_NAME" in str(err.value)


async def test_mutual_tls_presents_the_client_certificate(
    pki: Pki, mtls_proxy: tuple[str, TlsProxy]
) -> None:
    address, proxy = mtls_proxy
    with pytest.raises(ServiceError, match="the server may require a client certificate: set "
                       "ALTAVIZ_TEMPORAL_TLS_CLIENT_CERT and ALTAVIZ_TEMPORAL_TLS_CLIENT_KEY"):
        await connect(_settings(address, temporal_tls_server_ca=pki.ca,
                                temporal_tls_server_name=SERVER_NAME), address)
    app = App(settings=_settings(
        address, temporal_tls_server_ca=pki.ca, temporal_tls_server_name=SERVER_NAME,
        temporal_tls_client_cert=pki.client_cert, temporal_tls_client_key=pki.client_key))
    try:
        assert await _describe(await app.temporal_client()) == "default"
    finally:
        app.close()
    assert ((("commonName", "client"),),) in proxy.client_subjects


async def test_api_key_over_tls_is_never_logged(
    pki: Pki, tls_proxy: tuple[str, TlsProxy], caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str]
) -> None:
    address, _ = tls_proxy
    settings = load_settings(environ={
        "ALTAVIZ_TEMPORAL_ADDRESS": address, "ALTAVIZ_TEMPORAL_API_KEY": API_KEY,
        "ALTAVIZ_TEMPORAL_TLS_SERVER_CA": str(pki.ca),
        "ALTAVIZ_TEMPORAL_TLS_SERVER_NAME": SERVER_NAME})
    with caplog.at_level(logging.DEBUG):
        client = await connect(settings, address)
        assert await _describe(client) == "default"  # the dev server accepts any key
    assert client.api_key == API_KEY
    assert f"connected to Temporal at {address}, namespace default (TLS, server CA" in caplog.text
    assert "API key" in caplog.text
    out, err = capfd.readouterr()
    for text in (caplog.text, out, err, repr(settings), repr(connect_options(settings))):
        assert API_KEY not in text


async def test_tls_to_a_plain_server_fails_with_a_clear_error(dev_server: str) -> None:
    settings = _settings(dev_server, temporal_api_key=API_KEY)
    with pytest.raises(ServiceError) as err:
        await connect(settings, dev_server)
    msg = str(err.value)
    assert msg.startswith(f"cannot connect to Temporal at {dev_server} (TLS, API key): the "
                          "server answered without TLS")
    assert API_KEY not in msg


async def test_cli_with_debug_output_never_shows_the_api_key(
    dev_server: str, db_url: str, tmp_path: Path
) -> None:
    env = {"PATH": "/usr/bin:/bin", "ALTAVIZ_DATA_DIR": str(tmp_path / "data"),
           "ALTAVIZ_DATABASE_URL": db_url, "ALTAVIZ_TEMPORAL_ADDRESS": dev_server,
           "ALTAVIZ_TEMPORAL_API_KEY": API_KEY, "ALTAVIZ_LOG_LEVEL": "DEBUG"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "altaviz.app.cli", "--debug", "worker", "--no-schedule", env=env,
        cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 1
    assert f"cannot connect to Temporal at {dev_server} (TLS, API key)" in err.decode()
    assert API_KEY not in out.decode() + err.decode()


async def test_plain_client_to_a_tls_server_is_told_to_use_tls(
    tls_proxy: tuple[str, TlsProxy]
) -> None:
    address, _ = tls_proxy
    with pytest.raises(ServiceError, match=r"\(no TLS\): the server may require TLS: set "
                                           "ALTAVIZ_TEMPORAL_TLS=true"):
        await connect(_settings(address), address)


async def test_plain_connection_is_unchanged(dev_server: str) -> None:
    client = await connect(_settings(dev_server), dev_server)
    assert await _describe(client) == "default"
    assert connect_options(Settings()).tls is False


# --- the configuration that is built ----------------------------------------------------------

def test_tls_config_carries_the_file_bytes(pki: Pki) -> None:
    options = connect_options(_settings(
        "temporal.example:7233", temporal_tls_server_ca=pki.ca,
        temporal_tls_server_name=SERVER_NAME, temporal_tls_client_cert=pki.client_cert,
        temporal_tls_client_key=pki.client_key, temporal_namespace="fleet"))
    assert options.namespace == "fleet" and options.api_key is None
    assert options.tls == TLSConfig(
        server_root_ca_cert=pki.ca.read_bytes(), domain=SERVER_NAME,
        client_cert=pki.client_cert.read_bytes(),
        client_private_key=pki.client_key.read_bytes())
    assert "PRIVATE KEY" not in repr(options)


def test_api_key_implies_system_tls_unless_told_otherwise() -> None:
    options = connect_options(_settings("ns.acct.tmprl.cloud:7233", temporal_api_key=API_KEY))
    assert options.tls is True and options.api_key == API_KEY
    assert options.description == "TLS, API key"
    sidecar = connect_options(_settings("127.0.0.1:7233", temporal_api_key=API_KEY,
                                        temporal_tls=False))
    assert sidecar.tls is False and sidecar.description == "no TLS, API key"
    assert connect_options(_settings("h:7233", temporal_tls=True)).tls is True


# --- validation at start-up -------------------------------------------------------------------

def test_client_certificate_and_key_go_together(pki: Pki) -> None:
    for var, path in (("ALTAVIZ_TEMPORAL_TLS_CLIENT_CERT", pki.client_cert),
                      ("ALTAVIZ_TEMPORAL_TLS_CLIENT_KEY", pki.client_key)):
        with pytest.raises(ConfigError) as err:
            load_settings(environ={"ALTAVIZ_TEMPORAL_ADDRESS": "h:7233", var: str(path)})
        assert ("ALTAVIZ_TEMPORAL_TLS_CLIENT_CERT and ALTAVIZ_TEMPORAL_TLS_CLIENT_KEY go "
                "together") in str(err.value)


def test_missing_or_wrong_files_name_the_setting_and_the_path(
    pki: Pki, tmp_path: Path
) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(ConfigError) as err:
        load_settings(environ={"ALTAVIZ_TEMPORAL_ADDRESS": "h:7233",
                               "ALTAVIZ_TEMPORAL_TLS_SERVER_CA": str(missing)})
    assert (f"ALTAVIZ_TEMPORAL_TLS_SERVER_CA='{missing}' (from environment variable "
            f"ALTAVIZ_TEMPORAL_TLS_SERVER_CA): Value error, cannot read {missing}: "
            "No such file or directory") in str(err.value)
    # a certificate and key given the wrong way round
    with pytest.raises(ConfigError) as err:
        load_settings(environ={"ALTAVIZ_TEMPORAL_ADDRESS": "h:7233",
                               "ALTAVIZ_TEMPORAL_TLS_CLIENT_CERT": str(pki.client_key),
                               "ALTAVIZ_TEMPORAL_TLS_CLIENT_KEY": str(pki.client_cert)})
    msg = str(err.value)
    assert f"ALTAVIZ_TEMPORAL_TLS_CLIENT_CERT='{pki.client_key}'" in msg
    assert f"{pki.client_key} holds no PEM certificate" in msg
    assert f"{pki.client_cert} holds no PEM private key" in msg


def test_tls_options_need_an_external_server(pki: Pki) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(environ={"ALTAVIZ_TEMPORAL_API_KEY": API_KEY,
                               "ALTAVIZ_TEMPORAL_TLS_SERVER_CA": str(pki.ca)})
    msg = str(err.value)
    assert ("ALTAVIZ_TEMPORAL_TLS_SERVER_CA, ALTAVIZ_TEMPORAL_API_KEY only apply to an "
            "external Temporal server: set ALTAVIZ_TEMPORAL_ADDRESS") in msg
    assert API_KEY not in msg
    with pytest.raises(ConfigError, match="ALTAVIZ_TEMPORAL_TLS only applies to an external"):
        load_settings(environ={"ALTAVIZ_TEMPORAL_TLS": "true"})
    assert load_settings(environ={"ALTAVIZ_TEMPORAL_TLS": "false"}).temporal_tls is False


def test_tls_off_contradicting_tls_files_is_rejected(pki: Pki) -> None:
    with pytest.raises(ConfigError, match="ALTAVIZ_TEMPORAL_TLS is false but "
                                          "ALTAVIZ_TEMPORAL_TLS_SERVER_CA is set"):
        load_settings(environ={"ALTAVIZ_TEMPORAL_ADDRESS": "h:7233",
                               "ALTAVIZ_TEMPORAL_TLS": "false",
                               "ALTAVIZ_TEMPORAL_TLS_SERVER_CA": str(pki.ca)})


def test_api_key_is_masked_everywhere() -> None:
    settings = load_settings(environ={"ALTAVIZ_TEMPORAL_ADDRESS": "h:7233",
                                      "ALTAVIZ_TEMPORAL_API_KEY": API_KEY})
    assert API_KEY not in repr(settings) and API_KEY not in str(settings)
    assert API_KEY not in settings.model_dump_json()
    assert "ALTAVIZ_TEMPORAL_API_KEY" in ENV_HELP
    line = next(x for x in ENV_HELP.splitlines() if "ALTAVIZ_TEMPORAL_API_KEY" in x)
    assert "[" not in line  # no default shown
    with pytest.raises(ConfigError) as err:  # an invalid neighbour: the key is not echoed
        load_settings(environ={"ALTAVIZ_TEMPORAL_API_KEY": API_KEY,
                               "ALTAVIZ_HTTP_PORT": "eighty"})
    assert API_KEY not in str(err.value)
