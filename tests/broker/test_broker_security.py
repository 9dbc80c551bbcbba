"""A secured broker: each authentication kind and TLS against a real nats-server.

Every server here is a real ``nats-server`` (the embedded one, with a configuration
file included); certificates are made by the test with ``cryptography``, operator,
account and user JWTs with ``nkeys``. The permissions example is read from
docs/broker-security.md so the page stays true.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import ipaddress
import json
import os
import re
import signal
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nkeys
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from converge.errors import EventLogError
from events import BrokerConfig, JetStreamEventLog, TaskSubmitted
from events.connection import TlsConfig, connect_nats
from events.server import EmbeddedNatsServer

pytestmark = [pytest.mark.nats]

ROOT = Path(__file__).resolve().parents[2]
WAIT_SEC = 90.0


# -- material: certificates, nkeys, JWTs ------------------------------------------


def _write_pem(path: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
    path.with_suffix(".key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.with_suffix(".pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1/localhost; return (ca, cert, key)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "converge test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_pem(directory / "ca", ca_key, ca)
    _write_pem(directory / "server", key, cert)
    return directory / "ca.pem", directory / "server.pem", directory / "server.key"


def keypair(prefix: int) -> nkeys.KeyPair:
    return nkeys.from_seed(nkeys.encode_seed(os.urandom(32), prefix))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(signer: nkeys.KeyPair, subject: str, name: str, nats: dict[str, Any]) -> str:
    """A NATS JWT (``ed25519-nkey``) for ``subject``, signed by ``signer``."""
    claims: dict[str, Any] = {
        "iat": int(time.time()),
        "iss": signer.public_key.decode(),
        "name": name,
        "sub": subject,
        "nats": {**nats, "version": 2},
    }
    digest = hashlib.sha256(json.dumps(claims, sort_keys=True).encode()).digest()
    claims["jti"] = base64.b32encode(digest).decode().rstrip("=")
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    payload = _b64(json.dumps(claims).encode())
    signature = signer.sign(f"{header}.{payload}".encode())
    return f"{header}.{payload}.{_b64(signature)}"


UNLIMITED = {
    "subs": -1,
    "data": -1,
    "payload": -1,
    "imports": -1,
    "exports": -1,
    "wildcards": True,
    "conn": -1,
    "leaf": -1,
    "mem_storage": -1,
    "disk_storage": -1,
    "streams": -1,
    "consumer": -1,
}


def operator_setup(directory: Path) -> tuple[str, Path, Path]:
    """Operator mode: (server config, a valid creds file, a creds file of an unknown account)."""
    operator = keypair(nkeys.PREFIX_BYTE_OPERATOR)
    op_pub = operator.public_key.decode()
    account = keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    acc_pub = account.public_key.decode()
    op_jwt = jwt(operator, op_pub, "converge-op", {"type": "operator"})
    acc_jwt = jwt(operator, acc_pub, "CONVERGE", {"type": "account", "limits": UNLIMITED})
    system = keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    sys_pub = system.public_key.decode()
    sys_jwt = jwt(operator, sys_pub, "SYS", {"type": "account"})
    conf = (
        f'operator: "{op_jwt}"\n'
        f"system_account: {sys_pub}\n"
        "resolver: MEMORY\n"
        f'resolver_preload: {{ {acc_pub}: "{acc_jwt}", {sys_pub}: "{sys_jwt}" }}\n'
    )

    def creds(signer: nkeys.KeyPair, name: str) -> Path:
        user = keypair(nkeys.PREFIX_BYTE_USER)
        user_jwt = jwt(
            signer,
            user.public_key.decode(),
            name,
            {"type": "user", "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1},
        )
        path = directory / f"{name}.creds"
        path.write_text(
            "-----BEGIN NATS USER JWT-----\n"
            f"{user_jwt}\n"
            "------END NATS USER JWT------\n\n"
            "-----BEGIN USER NKEY SEED-----\n"
            f"{user.seed.decode()}\n"
            "------END USER NKEY SEED------\n"
        )
        return path

    return conf, creds(account, "worker"), creds(keypair(nkeys.PREFIX_BYTE_ACCOUNT), "stranger")


# -- the matrix ---------------------------------------------------------------------

Case = tuple[str, dict[str, Any], dict[str, Any], str]

# The server sends -ERR 'Authorization Violation' and closes; a client may read only the
# reset of that close, which converge names as a likely credentials problem.
REFUSED = "Authorization Violation|closed the connection \\(wrong or missing credentials"


def _userpass(tmp: Path) -> Case:
    conf = 'authorization { user: alice, password: "s3cret-pw" }\n'
    return conf, {"user": "alice", "password": "s3cret-pw"}, {"user": "alice"}, REFUSED


def _token(tmp: Path) -> Case:
    conf = 'authorization { token: "t0ken-123" }\n'
    return conf, {"token": "t0ken-123"}, {"token": "wrong"}, REFUSED


def _nkey(tmp: Path) -> Case:
    user, stranger = keypair(nkeys.PREFIX_BYTE_USER), keypair(nkeys.PREFIX_BYTE_USER)
    (tmp / "user.nk").write_bytes(user.seed)
    (tmp / "stranger.nk").write_bytes(stranger.seed)
    conf = f"authorization {{ users: [ {{ nkey: {user.public_key.decode()} }} ] }}\n"
    return (
        conf,
        {"nkey_seed": str(tmp / "user.nk")},
        {"nkey_seed": str(tmp / "stranger.nk")},
        REFUSED,
    )


def _creds(tmp: Path) -> Case:
    conf, good, bad = operator_setup(tmp)
    return conf, {"creds_file": str(good)}, {"creds_file": str(bad)}, REFUSED


def _tls(tmp: Path) -> Case:
    ca, cert, key = make_certificates(tmp)
    conf = f'tls {{ cert_file: "{cert}", key_file: "{key}" }}\n'
    # A client that does not trust the CA is refused by its own certificate check.
    return conf, {"tls": TlsConfig(ca_file=str(ca))}, {"tls": TlsConfig()}, "CERTIFICATE_VERIFY"


CASES: dict[str, Callable[[Path], Case]] = {
    "user-password": _userpass,
    "token": _token,
    "nkey": _nkey,
    "creds": _creds,
    "tls": _tls,
}


@pytest.mark.parametrize("kind", list(CASES))
@pytest.mark.asyncio
async def test_secured_broker_admits_the_right_credentials_only(kind: str, tmp_path: Path) -> None:
    conf_text, good, bad, refusal = CASES[kind](tmp_path)
    conf = tmp_path / "server.conf"
    conf.write_text(conf_text)
    async with EmbeddedNatsServer(
        data_dir=tmp_path / "nats", config_file=conf, start_timeout_sec=60
    ) as server:
        scheme = "tls" if kind == "tls" else "nats"
        url = server.url.replace("nats://", f"{scheme}://")
        config = BrokerConfig(servers=[url], connect_timeout_sec=20, **good)
        namespace = f"sec{uuid.uuid4().hex[:8]}"
        async with await JetStreamEventLog.connect(namespace=namespace, config=config) as log:
            stored = await log.append(TaskSubmitted(task={"id": "t1"}), subject="tasks.t1")
            read = [r async for r in log.read(stream="tasks")]
            assert [r.event.id for r in read] == [stored.event.id]
        refused = BrokerConfig(servers=[url], connect_timeout_sec=10, allow_reconnect=False, **bad)
        with pytest.raises(EventLogError, match=refusal) as info:
            await connect_nats(refused)
        assert "\n" not in str(info.value)
        for secret in ("s3cret-pw", "t0ken-123", "wrong"):
            assert secret not in str(info.value)


@pytest.mark.asyncio
async def test_tls_url_to_a_real_plain_server_fails_clearly(nats_url: str) -> None:
    config = BrokerConfig(servers=[nats_url.replace("nats://", "tls://")], user="u", password="p")
    with pytest.raises(EventLogError, match="does not offer TLS; refusing to connect in plain"):
        await connect_nats(config)


# -- the documented permissions example ---------------------------------------------


def _roles_conf() -> str:
    text = (ROOT / "docs" / "broker-security.md").read_text()
    found = re.search(r"<!-- roles.conf -->\n```text\n(.*?)```", text, re.S)
    assert found, "docs/broker-security.md lost its roles.conf example"
    return found.group(1)


@pytest.mark.asyncio
async def test_documented_roles_worker_appends_tasks_but_cannot_administer(
    tmp_path: Path,
) -> None:
    conf = tmp_path / "roles.conf"
    conf.write_text(_roles_conf())
    async with EmbeddedNatsServer(
        data_dir=tmp_path / "nats", config_file=conf, start_timeout_sec=60
    ) as server:

        def as_user(user: str, **extra: Any) -> BrokerConfig:
            return BrokerConfig(
                servers=[server.url],
                user=user,
                password=f"{user}-secret",
                connect_timeout_sec=20,
                **extra,
            )

        # The operator provisions the namespace's streams.
        async with await JetStreamEventLog.connect(
            namespace="converge", config=as_user("operator")
        ):
            pass
        async with await JetStreamEventLog.connect(
            namespace="converge", config=as_user("worker")
        ) as log:
            stored = await log.append(TaskSubmitted(task={"id": "t1"}), subject="tasks.t1")
            assert [r.event.id async for r in log.read(stream="tasks")] == [stored.event.id]

        violations: list[str] = []

        async def collect(exc: Exception) -> None:
            violations.append(str(exc))

        worker = await connect_nats(as_user("worker"), error_cb=collect)
        try:
            js = worker.jetstream(timeout=5)
            with pytest.raises((TimeoutError, Exception)):
                await js.add_stream(name="ROGUE", subjects=["rogue.>"])
            with pytest.raises((TimeoutError, Exception)):
                await js.publish("converge.pools.p1", b"{}", timeout=5)
            assert any('publish to "$js.api.stream.create.rogue"' in v.lower() for v in violations)
            assert any('publish to "converge.pools.p1"' in v for v in violations)
        finally:
            await worker.close()
        operator = await connect_nats(as_user("operator"))
        try:
            names = await operator.jetstream().streams_info()
            assert "ROGUE" not in {info.config.name for info in names}
            assert "CONVERGE_TASKS" in {info.config.name for info in names}
        finally:
            await operator.close()


# -- converge server --config ---------------------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVERGE_")}
    if "CONVERGE_NATS_SERVER" in os.environ:
        env["CONVERGE_NATS_SERVER"] = os.environ["CONVERGE_NATS_SERVER"]
    return {**env, **extra}


@pytest.mark.asyncio
async def test_server_command_runs_with_a_nats_server_config(tmp_path: Path) -> None:
    conf = tmp_path / "server.conf"
    conf.write_text('authorization { token: "t0ken-123" }\n')
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "converge",
        "server",
        "--config",
        str(conf),
        "--data-dir",
        str(tmp_path / "state"),
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env=_env(),
        cwd=ROOT,
    )
    try:
        assert server.stdout is not None
        line = (await asyncio.wait_for(server.stdout.readline(), WAIT_SEC)).decode()
        found = re.search(r"nats://\S+", line)
        assert found, line
        url = found.group(0)

        async def streams_ls(**env: str) -> tuple[int, str]:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "converge",
                "streams",
                "ls",
                "--url",
                url,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=_env(**env),
                cwd=ROOT,
            )
            _out, err = await asyncio.wait_for(proc.communicate(), WAIT_SEC)
            assert proc.returncode is not None
            return proc.returncode, err.decode()

        code, err = await streams_ls(CONVERGE_NATS_TOKEN="t0ken-123")
        assert code == 0, err
        code, err = await streams_ls()
        assert code == 1
        lines = err.strip().splitlines()
        assert len(lines) == 1 and re.search(REFUSED, lines[0]), err
    finally:
        server.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(server.wait(), WAIT_SEC) == 0


def test_tls_and_credentials_reach_the_broker_config_from_the_environment(tmp_path: Path) -> None:
    from converge.config import load_config

    ca, cert, key = make_certificates(tmp_path)
    env = {
        "CONVERGE_NATS_URL": "tls://127.0.0.1:4443",
        "CONVERGE_NATS_CREDS": str(tmp_path / "worker.creds"),
        "CONVERGE_NATS_TLS_CA_FILE": str(ca),
        "CONVERGE_NATS_TLS_CERT_FILE": str(cert),
        "CONVERGE_NATS_TLS_KEY_FILE": str(key),
    }
    broker = load_config(env=env).broker_config()
    assert broker.tls is not None and broker.tls.ca_file == str(ca)
    assert (broker.tls.cert_file, broker.tls.key_file) == (str(cert), str(key))
    assert broker.creds_file == str(tmp_path / "worker.creds")
    assert broker.tls.context().verify_mode.name == "CERT_REQUIRED"
