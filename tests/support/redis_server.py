"""A real ``redis-server`` for the tests: on a free 127.0.0.1 port (or a unix socket), in a temporary directory.

The broker tests need what only a real Redis does: pub/sub delivery, keys that
expire, a connection that drops when the server stops. :class:`RedisServer`
runs Debian's ``redis-server`` (``make test`` installs it when missing): nothing
persisted, nothing shared with another test. :meth:`RedisServer.stop` and
:meth:`RedisServer.start` again, on the same port, are a real outage.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import typing as t

from .servers import free_port

#: How long redis-server may take to answer its first PING.
START_TIMEOUT = 10.0


class RedisServer:
    """``redis-server``; ``url`` is the ``ASYNCWS_BROKER_URL`` for it.

    ``listen`` says how: ``"tcp"`` on a plain 127.0.0.1 port, ``"tls"`` on a TLS
    port only (with a CA made for it, given in the URL), ``"unix"`` on a unix
    socket only.
    """

    def __init__(self, password: str | None = None, *, listen: t.Literal["tcp", "tls", "unix"] = "tcp") -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not installed (Debian package redis-server; `make test` installs it when missing)."
            )
        self.binary = binary
        self.password = password
        self.listen = listen
        self.port = 0 if listen == "unix" else free_port()
        self.directory = tempfile.mkdtemp(prefix="redis-test-")
        self.tls_files = make_tls_files(self.directory) if listen == "tls" else {}
        self.socket_path = os.path.join(self.directory, "redis.sock")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.listen == "unix":
            return f"unix://{self.socket_path}?db=0"
        auth = f":{self.password}@" if self.password else ""
        if self.listen == "tls":
            return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={self.tls_files['ca']}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        command = [
            self.binary,
            *self._listening(),
            "--dir", self.directory,
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
        ]  # fmt: skip
        if self.password:
            command += ["--requirepass", self.password]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while not self.ping():
            if self.process.poll() is not None:
                output = self.process.stdout.read().decode(errors="replace") if self.process.stdout else ""
                raise RuntimeError(f"redis-server exited with {self.process.returncode}:\n{output}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer at {self.url} within {START_TIMEOUT} s.")
            time.sleep(0.02)
        return self

    def _listening(self) -> list[str]:
        if self.listen == "unix":
            return ["--port", "0", "--unixsocket", self.socket_path, "--unixsocketperm", "700"]
        if self.listen == "tls":
            files = self.tls_files
            return [
                "--port", "0", "--tls-port", str(self.port), "--bind", "127.0.0.1",
                "--tls-cert-file", files["cert"], "--tls-key-file", files["key"],
                "--tls-ca-cert-file", files["ca"], "--tls-auth-clients", "no",
            ]  # fmt: skip
        return ["--port", str(self.port), "--bind", "127.0.0.1"]

    def _connect(self) -> socket.socket:
        if self.listen == "unix":
            sock = socket.socket(socket.AF_UNIX)
            sock.settimeout(2)
            try:
                sock.connect(self.socket_path)
            except OSError:
                sock.close()
                raise
            return sock
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=2)
        if self.listen == "tls":
            context = ssl.create_default_context(cafile=self.tls_files["ca"])
            return context.wrap_socket(sock, server_hostname="127.0.0.1")
        return sock

    def ping(self) -> bool:
        """Whether the server answers PING now (a plain RESP exchange, no client library)."""
        return self.command("PING") in (b"+PONG", b"-NOAUTH Authentication required.")

    def command(self, *args: str) -> bytes:
        """Send one command inline; the first line of the answer (b"" when nobody listens)."""
        try:
            with self._connect() as sock:
                if self.password:
                    sock.sendall(f"AUTH {self.password}\r\n".encode())
                    sock.recv(64)
                sock.sendall((" ".join(args) + "\r\n").encode())
                return sock.recv(65536).split(b"\r\n", 1)[0]
        except OSError:
            return b""

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL): its clients' connections drop."""
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc_info: t.Any) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


def make_tls_files(directory: str) -> dict[str, str]:
    """A CA, and a certificate it signs for 127.0.0.1 and localhost with its key: their paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "groups test CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    signing = x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
        key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
    )  # fmt: skip
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(signing, critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = {name: os.path.join(directory, f"{name}.pem") for name in ("ca", "cert", "key")}
    with open(paths["ca"], "wb") as file:
        file.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(paths["cert"], "wb") as file:
        file.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(paths["key"], "wb") as file:
        file.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return paths


class RedisProxy:
    """A TCP proxy in front of a :class:`RedisServer`, for faults only a network makes.

    ``silent``: connections are accepted and nothing is forwarded either way
    (a load balancer whose backend is away); set it false and new connections
    are forwarded again. :meth:`cut_off` makes the connections open now silent
    the same way. ``drop_after_publish``: once, the connection that sent
    a PUBLISH is closed after Redis has run it and before its reply reaches the
    client (a connection lost with the command done). ``url`` is the proxy's.
    """

    def __init__(self, server: RedisServer, *, silent: bool = False, drop_after_publish: bool = False) -> None:
        self.server = server
        self.silent = silent
        self.drop_after_publish = drop_after_publish
        self.dropped = threading.Event()
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = [self.listener]
        self.cut: set[socket.socket] = set()
        threading.Thread(target=self._accept, name="redis proxy", daemon=True).start()

    @property
    def url(self) -> str:
        return self.server.url.replace(f":{self.server.port}/", f":{self.port}/")

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            self.sockets.append(client)
            if self.silent:
                continue  # held open, never answered
            upstream = socket.create_connection(("127.0.0.1", self.server.port))
            self.sockets.append(upstream)
            published = threading.Event()
            threading.Thread(target=self._pipe, args=(client, upstream, published, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, published, True), daemon=True).start()

    def _pipe(self, source: socket.socket, target: socket.socket, published: threading.Event, replies: bool) -> None:
        try:
            while data := source.recv(65536):
                if not replies and b"PUBLISH" in data.upper():
                    published.set()
                if replies and published.is_set() and self.drop_after_publish and not self.dropped.is_set():
                    self.dropped.set()
                    break  # the reply is not passed on
                if source not in self.cut:
                    target.sendall(data)
        except OSError:
            pass
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut_off(self) -> None:
        """From now on forward nothing on the connections open now, and keep them open: a link a NAT or a
        firewall forgot, with no reset to say so. Later connections are forwarded."""
        self.cut.update(self.sockets)

    def __enter__(self) -> RedisProxy:
        return self

    def __exit__(self, *exc_info: t.Any) -> None:
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the threads blocked on it
            sock.close()
