"""HTTP for media downloads: pooled sessions, connections that refuse non-public addresses, a hard deadline.

- One `requests.Session` per thread (a `Session` is not thread-safe), so connections to a host are reused
  across files; urllib3's `Retry` retries idempotent GETs answered 429/502/503/504, with a short backoff.
- The address check is made on the address a connection really opens, after DNS: a name that resolves
  to loopback, a private network, link-local (cloud metadata, 169.254.169.254) or any other non-public
  address is refused before connecting, however the URL spelled it (decimal, hex, IPv6, a DNS name that
  changes its answer between two lookups, a redirect hop).
- The deadline is kept on the sockets: when it passes, every socket the download opened or reused is shut
  down from a timer thread, which ends any read blocked inside http.client or urllib3 (headers dripped a
  byte at a time, a chunk-size line that never ends, a TLS handshake), not only the reads between chunks.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.poolmanager import PoolManager
from urllib3.util import Retry
from urllib3.util.connection import create_connection

RETRY_STATUSES = (429, 502, 503, 504)


class NonPublicAddress(Exception):
    """The host resolves only to addresses that are not public (loopback, private, link-local, ...)."""

    def __init__(self, host: str, addresses: list[str]):
        super().__init__(host)
        self.host = host
        self.addresses = addresses


def is_public_address(text: str) -> bool:
    """True for a globally routable unicast address, also checking IPv4 addresses embedded in IPv6 ones.

    >>> [is_public_address(a) for a in ("93.184.216.34", "127.0.0.1", "169.254.169.254", "::ffff:10.0.0.1")]
    [True, False, False, False]
    """
    address = ipaddress.ip_address(text.split("%", 1)[0])
    candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        teredo = address.teredo
        candidates += [a for a in (address.ipv4_mapped, address.sixtofour, teredo and teredo[1]) if a]
        if address in _NAT64:
            candidates.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return all(a.is_global and not a.is_multicast for a in candidates)


_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class SocketDeadline:
    """The sockets one download opened or reused, shut down from a timer thread when its time is up."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._duplicates: list[socket.socket] = []
        self.expired = False

    def add(self, sock: socket.socket) -> None:
        """Shut `sock` down at the deadline. A duplicate descriptor is kept: it stays valid when TLS wraps
        (and detaches) the socket, and it can never name another file once urllib3 closes its own."""
        duplicate = socket.fromfd(sock.fileno(), sock.family, sock.type)
        with self._lock:
            self._duplicates.append(duplicate)
            if self.expired:
                _shut(duplicate)

    def expire(self) -> None:
        with self._lock:
            self.expired = True
            for duplicate in self._duplicates:
                _shut(duplicate)

    def close(self) -> None:
        with self._lock:
            for duplicate in self._duplicates:
                duplicate.close()
            self._duplicates.clear()


class DownloadWatch:
    """The deadline of the download running in one thread (each download gets its own `SocketDeadline`)."""

    def __init__(self) -> None:
        self._current: SocketDeadline | None = None

    @contextmanager
    def deadline(self, seconds: float) -> Iterator[SocketDeadline]:
        current = self._current = SocketDeadline()
        timer = threading.Timer(seconds, current.expire)
        timer.daemon = True
        timer.start()
        try:
            yield current
        finally:
            timer.cancel()
            self._current = None
            current.close()

    def watch(self, sock: socket.socket) -> None:
        if self._current is not None:  # only this thread's connections call it, while it downloads
            self._current.add(sock)


def _shut(sock: socket.socket) -> None:
    with suppress(OSError):  # already closed by the peer
        sock.shutdown(socket.SHUT_RDWR)  # wakes a recv blocked in another thread


class _ConnectPolicy:
    """What one session's connections may connect to, and the watch of the thread that owns them."""

    def __init__(self, public_only: bool, watch: DownloadWatch):
        self.public_only = public_only
        self.watch = watch

    def connect(self, connection: HTTPConnection) -> socket.socket:
        sock = _connect_public(connection) if self.public_only else HTTPConnection._new_conn(connection)
        self.watch.watch(sock)
        return sock


def _connect_public(connection: HTTPConnection) -> socket.socket:
    """Resolve once, keep the public addresses, connect to one of those: never a second lookup."""
    host = connection._dns_host
    try:
        found = socket.getaddrinfo(host, connection.port, 0, socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise NameResolutionError(connection.host, connection, error) from error
    public = [info[4][0] for info in found if is_public_address(info[4][0])]
    if not public:
        raise NonPublicAddress(connection.host, sorted({info[4][0] for info in found}))
    last_error: OSError | None = None
    for address in public:
        try:
            return create_connection(
                (address, connection.port),
                connection.timeout,
                source_address=connection.source_address,
                socket_options=connection.socket_options,
            )
        except TimeoutError as error:
            raise ConnectTimeoutError(
                connection,
                f"Connection to {connection.host} timed out. (connect timeout={connection.timeout})",
            ) from error
        except OSError as error:
            last_error = error
    raise NewConnectionError(connection, f"Failed to establish a new connection: {last_error}")


class _WatchedHTTPConnection(HTTPConnection):
    def __init__(self, *args, connect_policy: _ConnectPolicy, **kwargs):
        super().__init__(*args, **kwargs)
        self._connect_policy = connect_policy

    def _new_conn(self) -> socket.socket:
        return self._connect_policy.connect(self)

    def request(self, *args, **kwargs) -> None:  # type: ignore[override]
        if self.sock is not None:  # a kept-alive connection: watched by this download too
            self._connect_policy.watch.watch(self.sock)
        super().request(*args, **kwargs)


class _WatchedHTTPSConnection(HTTPSConnection):
    def __init__(self, *args, connect_policy: _ConnectPolicy, **kwargs):
        super().__init__(*args, **kwargs)
        self._connect_policy = connect_policy

    def _new_conn(self) -> socket.socket:
        return self._connect_policy.connect(self)  # TLS then verifies the certificate for the host name

    def request(self, *args, **kwargs) -> None:  # type: ignore[override]
        if self.sock is not None:
            self._connect_policy.watch.watch(self.sock)
        super().request(*args, **kwargs)


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _PolicyPoolManager(PoolManager):
    def __init__(self, connect_policy: _ConnectPolicy, **kwargs):
        super().__init__(**kwargs)
        self.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}
        self._connect_policy = connect_policy

    def _new_pool(self, scheme, host, port, request_context=None) -> HTTPConnectionPool:
        pool = super()._new_pool(scheme, host, port, request_context)
        pool.conn_kw["connect_policy"] = self._connect_policy
        return pool


class _PolicyAdapter(HTTPAdapter):
    def __init__(self, connect_policy: _ConnectPolicy, retries: Retry):
        self._connect_policy = connect_policy
        super().__init__(max_retries=retries)

    def init_poolmanager(self, connections, maxsize, block=False, **pool_kwargs) -> None:
        self.poolmanager = _PolicyPoolManager(
            self._connect_policy, num_pools=connections, maxsize=maxsize, block=block, **pool_kwargs
        )


class _ThreadSessions:
    """One thread's two sessions (any address / public addresses only), sharing the thread's watch."""

    def __init__(self, retries: Retry):
        self.pid = os.getpid()
        self.watch = DownloadWatch()
        self.any_address = _session(_ConnectPolicy(False, self.watch), retries)
        self.public_only = _session(_ConnectPolicy(True, self.watch), retries)


def _session(policy: _ConnectPolicy, retries: Retry) -> requests.Session:
    session = requests.Session()  # trust_env stays on: REQUESTS_CA_BUNDLE still applies (not proxies, .netrc)
    session.headers["Accept-Encoding"] = "identity"  # media is sent as is; see MediaLoader._download
    adapter = _PolicyAdapter(policy, retries)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class MediaHTTP:
    """The HTTP client of one `MediaLoader`: sessions per thread (and per process, for forked workers)."""

    def __init__(self, retries: int = 3, backoff: float = 0.25):
        self._retry = Retry(
            total=retries,
            connect=1,
            read=False,  # a read error is raised as it is (ReadTimeout), never retried: the body may be half read
            status=retries,
            other=0,
            redirect=False,  # redirects are followed (and checked) by the loader, hop by hop
            allowed_methods={"GET"},
            status_forcelist=RETRY_STATUSES,
            backoff_factor=backoff,
            backoff_max=2.0,
            respect_retry_after_header=False,  # a Retry-After of hours would outlast the deadline
            raise_on_status=False,
        )
        self._local = threading.local()

    def _sessions(self) -> _ThreadSessions:
        sessions = getattr(self._local, "sessions", None)
        if sessions is None or sessions.pid != os.getpid():
            sessions = self._local.sessions = _ThreadSessions(self._retry)
        return sessions

    @contextmanager
    def deadline(self, seconds: float) -> Iterator[SocketDeadline]:
        """Every request of this thread inside the block ends by `seconds` from now."""
        with self._sessions().watch.deadline(seconds) as watch:
            yield watch

    def get(
        self, url: str, headers: dict[str, str], timeout: tuple[float, float], public_only: bool
    ) -> requests.Response:
        """A streamed GET without following redirects; raises NonPublicAddress when `public_only` refuses."""
        sessions = self._sessions()
        session = sessions.public_only if public_only else sessions.any_address
        return session.get(
            url,
            headers=headers,
            stream=True,
            timeout=timeout,
            allow_redirects=False,
            # No proxy from HTTP(S)_PROXY/ALL_PROXY: it would connect for us, and the address check would
            # see only the proxy. An auth that adds nothing keeps .netrc credentials off task-named hosts.
            proxies=_NO_PROXIES,
            auth=_no_netrc_credentials,
        )


_NO_PROXIES = {"http": None, "https": None, "all": None}


def _no_netrc_credentials(request: requests.PreparedRequest) -> requests.PreparedRequest:
    return request
