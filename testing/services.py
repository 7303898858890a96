"""Servers of the test's (or the cluster script's) own: PgBouncer, RabbitMQ, a PostgreSQL instance.

Each starts from Debian's packages on an address and port it is given, with
its files in a folder of its own, and never touches the machine's shared
servers (the PostgreSQL on 5432, the RabbitMQ node ``rabbit@<host>`` on 5672):
its own node name, ports, data folder and Erlang cookie. ``prefix`` runs the
server inside something else, e.g. ``["ip", "netns", "exec", "db"]`` (the
cluster script's hosts). ``stop()`` ends what ``start()`` started, whatever
state it is in.

Servers that refuse to run as root (pgbouncer, postgres) are started as the
``postgres`` system user when this process is root, with their folder handed to it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _wait(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{tail}")
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"{what}: not ready within {timeout:g} s\n{tail}")
        time.sleep(0.1)


def _port_open(host: str, port: int, prefix: Sequence[str] = ()) -> bool:
    if prefix:  # inside a namespace: ask from there
        code = f"import socket; socket.create_connection(({host!r}, {port}), timeout=1).close()"
        return subprocess.run([*prefix, "python3", "-c", code], capture_output=True, check=False).returncode == 0  # noqa: S603, S607
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return False
    return True


def _as_postgres_user(folder: Path) -> tuple[list[str], dict]:
    """(``runuser`` prefix, Popen kwargs) to run as ``postgres`` when root; nothing otherwise."""
    if os.geteuid() != 0:
        return [], {}
    entry = pwd.getpwnam("postgres")
    for path in [folder, *folder.rglob("*")]:
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return ["runuser", "-u", "postgres", "--"], {}


def _terminate(proc: subprocess.Popen | None, timeout: float = 10) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    except ProcessLookupError:
        pass


def _remove(server: object) -> None:
    """A server's temporary folder, when it made one itself (a folder it was given is the caller's)."""
    if getattr(server, "owned", False):
        shutil.rmtree(server.folder, ignore_errors=True)  # type: ignore[attr-defined]


class PgBouncer:
    """``pgbouncer`` in transaction pooling in front of one PostgreSQL server (any database name).

    A small server pool (``pool_size``) so that consecutive transactions of one
    client really land on different server connections: any session state a
    client relied on (a prepared statement, a SET, an advisory lock) shows.
    """

    def __init__(
        self,
        server_host: str = "127.0.0.1",
        server_port: int = 5432,
        *,
        listen: str = "127.0.0.1",
        port: int | None = None,
        pool_size: int = 2,
        max_client_conn: int = 200,
        prefix: Sequence[str] = (),
        folder: Path | None = None,
    ) -> None:
        self.server_host, self.server_port = server_host, server_port
        self.listen, self.port = listen, port or free_port(listen if not prefix else "127.0.0.1")
        self.pool_size, self.max_client_conn = pool_size, max_client_conn
        self.prefix = list(prefix)
        self.owned = folder is None  # a temporary folder of its own: removed by stop()
        self.folder = folder or Path(tempfile.mkdtemp(prefix="potaflow-pgbouncer-"))
        self.proc: subprocess.Popen | None = None

    def url(self, database: str, user: str = "postgres") -> str:
        return f"postgres://{user}@{self.listen}:{self.port}/{database}"

    def start(self, timeout: float = 20) -> PgBouncer:
        if shutil.which("pgbouncer") is None:
            raise RuntimeError("pgbouncer is not installed (Debian: apt-get install pgbouncer)")
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "userlist.txt").write_text('"postgres" ""\n')
        ini = self.folder / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            f"* = host={self.server_host} port={self.server_port}\n"
            "[pgbouncer]\n"
            f"listen_addr = {self.listen}\n"
            f"listen_port = {self.port}\n"
            f"unix_socket_dir = {self.folder}\n"
            "auth_type = trust\n"
            f"auth_file = {self.folder / 'userlist.txt'}\n"
            "pool_mode = transaction\n"
            # FIFO, not LIFO: consecutive transactions of one client land on different server
            # connections, so session state relied on by mistake fails here, not only under load.
            "server_round_robin = 1\n"
            f"default_pool_size = {self.pool_size}\n"
            "min_pool_size = 0\n"
            "reserve_pool_size = 0\n"
            f"max_client_conn = {self.max_client_conn}\n"
            # A dropped test database must not be held open by idle server connections.
            "server_idle_timeout = 5\n"
            "server_lifetime = 300\n"
            "ignore_startup_parameters = extra_float_digits,options\n"
            f"logfile = {self.folder / 'pgbouncer.log'}\n"
            f"pidfile = {self.folder / 'pgbouncer.pid'}\n"
            "admin_users = postgres\n"
        )
        runas, _ = _as_postgres_user(self.folder)
        self.proc = subprocess.Popen(  # noqa: S603 - Debian's pgbouncer, our config
            [*self.prefix, *runas, "pgbouncer", str(ini)],
            stdout=subprocess.DEVNULL,
            stderr=(self.folder / "stderr.log").open("wb"),
            start_new_session=True,
        )
        _wait(
            lambda: _port_open(self.listen, self.port, self.prefix),
            timeout,
            "pgbouncer",
            self.proc,
            self.folder / "pgbouncer.log",
        )
        return self

    def stop(self) -> None:
        _terminate(self.proc)
        _remove(self)

    def __enter__(self) -> PgBouncer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RabbitMQ:
    """A ``rabbitmq-server`` node of its own: node name, AMQP and distribution ports, folders, cookie.

    The machine's own node (``rabbit@<host>`` on 5672) is never touched; the
    node registers with the machine's ``epmd`` (a name service) like any other.
    """

    def __init__(
        self,
        *,
        listen: str = "127.0.0.1",
        port: int | None = None,
        prefix: Sequence[str] = (),
        folder: Path | None = None,
        name: str | None = None,
    ) -> None:
        self.listen = listen
        self.port = port or free_port()
        self.dist_port = free_port()
        self.prefix = list(prefix)
        self.owned = folder is None
        self.folder = folder or Path(tempfile.mkdtemp(prefix="potaflow-rabbitmq-"))
        self.node = f"{name or f'potaflow-{os.getpid()}-{self.port}'}@localhost"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{self.listen}:{self.port}//"

    def env(self) -> dict[str, str]:
        home = self.folder / "home"
        return {
            **os.environ,
            "HOME": str(home),  # the Erlang cookie lives here: ours, not the machine node's
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": self.listen,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.folder / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.folder / "rabbitmq"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.folder / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.folder / "rabbitmq.pid"),
            "RABBITMQ_ALLOW_INPUT": "",
            # Erlang distribution (rabbitmqctl's channel) on loopback only, not every interface.
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def start(self, timeout: float = 90) -> RabbitMQ:
        if shutil.which("rabbitmq-server") is None:
            raise RuntimeError("rabbitmq-server is not installed (Debian: apt-get install rabbitmq-server)")
        for sub in ("home", "mnesia", "log"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        (self.folder / "enabled_plugins").write_text("[].\n")
        # guest may log in from anywhere (the cluster's hosts are not loopback); no other user exists.
        (self.folder / "rabbitmq.conf").write_text(
            "loopback_users = none\n"
            "listeners.tcp.default = " + f"{self.listen}:{self.port}\n"
            "management_agent.disable_metrics_collector = true\n"
            "log.console = false\n"
            "log.file.level = warning\n"
        )
        cookie = self.folder / "home" / ".erlang.cookie"
        if not cookie.exists():  # a restart keeps the node's cookie (and its data)
            cookie.write_text(os.urandom(16).hex().upper())
            cookie.chmod(0o400)
        wrapper = shutil.which("rabbitmq-server") or "rabbitmq-server"
        # Debian's /usr/sbin/rabbitmq-server drops to the rabbitmq user when run as root; the
        # real script keeps our user and our folders.
        script = "/usr/lib/rabbitmq/bin/rabbitmq-server"
        argv = [script] if Path(script).exists() else [wrapper]
        self.proc = subprocess.Popen(  # noqa: S603 - Debian's rabbitmq-server, our config
            [*self.prefix, *argv],
            env=self.env(),
            stdout=(self.folder / "stdout.log").open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _wait(self.ready, timeout, f"rabbitmq-server {self.node}", self.proc, self.folder / "stdout.log")
        return self

    def ready(self) -> bool:
        if not _port_open(self.listen, self.port, self.prefix):
            return False
        try:
            import amqp  # noqa: PLC0415 - only when a RabbitMQ is used

            if self.prefix:
                return True
            conn = amqp.Connection(f"{self.listen}:{self.port}", userid="guest", password="guest", connect_timeout=2)  # noqa: S106 - the node's own guest user
            conn.connect()
            conn.close()
        except Exception:  # noqa: BLE001 - not up yet
            return False
        return True

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """``rabbitmqctl`` against this node (its name and cookie), e.g. ``ctl("close_all_connections", "why")``."""
        script = "/usr/lib/rabbitmq/bin/rabbitmqctl"
        argv = [script if Path(script).exists() else "rabbitmqctl", "-n", self.node, *args]
        return subprocess.run(  # noqa: S603 - Debian's rabbitmqctl
            [*self.prefix, *argv], env=self.env(), capture_output=True, text=True, timeout=timeout, check=False
        )

    def stop(self) -> None:
        _terminate(self.proc, timeout=20)
        # The Erlang VM writes its own pid: end it by that id if it outlived its process group.
        try:
            pid = int((self.folder / "rabbitmq.pid").read_text().strip())
            os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError):
            pass
        _remove(self)

    def __enter__(self) -> RabbitMQ:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Postgres:
    """A PostgreSQL instance of its own (``initdb`` into a folder), trust authentication on one address."""

    def __init__(self, *, listen: str = "127.0.0.1", port: int | None = None, prefix: Sequence[str] = (),
                 folder: Path | None = None, trust_network: str = "127.0.0.0/8") -> None:  # fmt: skip
        self.listen, self.port = listen, port or free_port()
        self.prefix = list(prefix)
        self.owned = folder is None
        self.folder = folder or Path(tempfile.mkdtemp(prefix="potaflow-postgres-"))
        self.trust_network = trust_network
        self.proc: subprocess.Popen | None = None
        versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
        if not versions:
            raise RuntimeError("PostgreSQL's server binaries are not installed (/usr/lib/postgresql/*/bin)")
        self.bin = versions[-1].parent

    def url(self, database: str = "postgres") -> str:
        return f"postgres://postgres@{self.listen}:{self.port}/{database}"

    def start(self, timeout: float = 60) -> Postgres:
        data = self.folder / "data"
        self.folder.mkdir(parents=True, exist_ok=True)
        runas, _ = _as_postgres_user(self.folder)
        subprocess.run(  # noqa: S603 - Debian's initdb
            [*runas, str(self.bin / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8"],
            check=True,
            capture_output=True,
        )
        with (data / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {self.trust_network} trust\n")
        _as_postgres_user(self.folder)
        self.proc = subprocess.Popen(  # noqa: S603 - Debian's postgres
            [*self.prefix, *runas, str(self.bin / "postgres"), "-D", str(data), "-h", self.listen,
             "-p", str(self.port), "-k", str(self.folder), "-c", "max_connections=300",
             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", "timezone=UTC", "-c", "shared_buffers=64MB"],
            stdout=(self.folder / "postgres.log").open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        _wait(lambda: _port_open(self.listen, self.port, self.prefix), timeout, "postgres", self.proc,
              self.folder / "postgres.log")  # fmt: skip
        return self

    def stop(self) -> None:
        _terminate(self.proc, timeout=20)
        _remove(self)

    def __enter__(self) -> Postgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


DEPLOY_NGINX = Path(__file__).resolve().parent.parent / "deploy" / "nginx"


class Nginx:
    """nginx with the shipped ``deploy/nginx/potaflow.conf``, verbatim; only the two site files differ.

    ``upstreams``: the web hosts ("host:port"); ``site``: server-context lines (listen, proxy_bind...).
    """

    def __init__(
        self,
        upstreams: Sequence[str],
        *,
        listen: str = "127.0.0.1",
        port: int | None = None,
        site_extra: Sequence[str] = (),
        prefix: Sequence[str] = (),
        folder: Path | None = None,
        worker_connections: int = 1024,
    ) -> None:
        self.upstreams, self.listen = list(upstreams), listen
        self.port = port or free_port()
        self.site_extra, self.prefix = list(site_extra), list(prefix)
        self.owned = folder is None
        self.folder = folder or Path(tempfile.mkdtemp(prefix="potaflow-nginx-"))
        self.worker_connections = worker_connections
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.listen}:{self.port}"

    def write_config(self) -> Path:
        conf = self.folder / "conf"
        for sub in ("conf", "logs", "tmp"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        # nginx's workers drop to an unprivileged user when started as root: they must reach tmp/ (request
        # bodies over client_body_buffer_size are written there) through a folder mkdtemp made 0700.
        self.folder.chmod(0o755)
        (self.folder / "tmp").chmod(0o777)
        shutil.copy(DEPLOY_NGINX / "potaflow.conf", conf / "potaflow.conf")
        (conf / "potaflow-upstream.conf").write_text(
            "".join(f"server {u} max_fails=1 fail_timeout=5s;\n" for u in self.upstreams)
        )
        (conf / "potaflow-site.conf").write_text(
            f"listen {self.listen}:{self.port};\n" + "".join(f"{line}\n" for line in self.site_extra)
        )
        tmp = self.folder / "tmp"
        (conf / "nginx.conf").write_text(
            f"pid {self.folder / 'nginx.pid'};\n"
            f"error_log {self.folder / 'logs' / 'error.log'} warn;\n"
            "worker_processes 1;\n"
            f"events {{ worker_connections {self.worker_connections}; }}\n"
            "http {\n"
            "    access_log off;\n"
            f"    client_body_temp_path {tmp}/body;\n"
            f"    proxy_temp_path {tmp}/proxy;\n"
            f"    fastcgi_temp_path {tmp}/fastcgi;\n"
            f"    uwsgi_temp_path {tmp}/uwsgi;\n"
            f"    scgi_temp_path {tmp}/scgi;\n"
            "    include potaflow.conf;\n"
            "}\n"
        )
        return conf / "nginx.conf"

    def check(self) -> subprocess.CompletedProcess:
        """``nginx -t`` on the written configuration."""
        main = self.write_config()
        return subprocess.run(  # noqa: S603 - Debian's nginx, our config
            ["nginx", "-t", "-p", str(self.folder), "-c", str(main)], capture_output=True, text=True, check=False
        )

    def start(self, timeout: float = 20) -> Nginx:
        if shutil.which("nginx") is None:
            raise RuntimeError("nginx is not installed (Debian: apt-get install nginx-light)")
        main = self.write_config()
        self.proc = subprocess.Popen(  # noqa: S603 - Debian's nginx, our config
            [*self.prefix, "nginx", "-p", str(self.folder), "-c", str(main), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=(self.folder / "logs" / "stderr.log").open("wb"),
            start_new_session=True,
        )
        _wait(lambda: _port_open(self.listen, self.port, self.prefix), timeout, "nginx", self.proc,
              self.folder / "logs" / "stderr.log")  # fmt: skip
        return self

    def reload(self) -> None:
        """New upstreams or site lines, without dropping connections (SIGHUP)."""
        self.write_config()
        if self.proc is not None:
            self.proc.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        _terminate(self.proc)
        _remove(self)

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
