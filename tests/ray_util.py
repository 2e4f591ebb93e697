"""Ray clusters for the ``--ray`` tests, listening on loopback only.

Ray binds its servers to every interface and rewrites 127.0.0.1 to the machine's routable address,
so "loopback only" needs a network namespace that has nothing but ``lo`` (root and ``ip`` needed;
the tests skip with the reason elsewhere, and run in CI, which is root):

- :func:`in_process_cluster`: ``ray.init(num_cpus=2, include_dashboard=False)`` from the test
  process, whose main thread first enters such a namespace (``setns``; Ray's processes and threads
  started from it inherit it) and returns to its own after ``ray.shutdown()``.
- :class:`LoopbackCluster`: ``ray start --head`` plus worker nodes in a namespace, each node a
  ``ray start --block`` process of ours, so a node is killed by the PIDs of its process tree, and
  every process left in the namespace is stopped by its PID at the end (``ray stop`` is not used:
  it kills every Ray process on the machine by name, other users' included).
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

#: Environment for every Ray process a test starts: nothing phones home, logs are not deduplicated,
#: and token authentication is on with a token of this test process (never ~/.ray/auth_token's),
#: one per process because Ray caches the token it loaded first.
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "0", "RAY_DISABLE_IMPORT_WARNING": "1",
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
#: Object store per node, bytes (Ray's minimum is ~75 MB; the tests move a few kilobytes).
OBJECT_STORE_BYTES = 100 * 1024 * 1024
#: The head declares a silent node dead after ~3 s, not Ray's ~30 s (its GCS health checks).
FAST_NODE_DEATH = {"RAY_health_check_initial_delay_ms": "1000", "RAY_health_check_period_ms": "1000",
                   "RAY_health_check_timeout_ms": "1000", "RAY_health_check_failure_threshold": "3"}
_CLONE_NEWNET = 0x40000000


def use_ray_env() -> None:
    """Put :data:`RAY_ENV` into this process's environment, and make an already imported Ray read
    it again (Ray reads ``RAY_AUTH_MODE`` into its config once, at import)."""
    os.environ.update(RAY_ENV)
    if "ray" in sys.modules:
        try:
            from ray._raylet import Config
        except ImportError:  # pragma: no cover - another Ray release: imported after us, it read the env
            return
        Config.initialize("")


def need_ray() -> None:
    """Skip the calling module where the [ray] extra is missing (pip install 'fastsal[ray]'); set
    :data:`RAY_ENV` first, so that Ray reads it when imported."""
    os.environ.update(RAY_ENV)
    pytest.importorskip("ray", reason="the [ray] extra is not installed: pip install 'fastsal[ray]'")
    pytest.importorskip("ray.data", reason="the [ray] extra is not installed: pip install 'fastsal[ray]'")
    pytest.importorskip("pyarrow", reason="the [ray] extra is not installed: pip install 'fastsal[ray]'")


def need_netns() -> None:
    """Skip unless this process may make network namespaces (root, ``ip`` on PATH, Linux)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("loopback-only Ray clusters need Linux network namespaces")
    if os.geteuid() != 0:
        pytest.skip("loopback-only Ray clusters need root (ip netns add); CI runs as root")
    if shutil.which("ip") is None:
        pytest.skip("loopback-only Ray clusters need the `ip` command (iproute2)")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, timeout=30, capture_output=True)


@contextlib.contextmanager
def loopback_namespace() -> Iterator[str]:
    """A fresh network namespace with only ``lo`` up; yields its name, deletes it after (after
    killing, by PID, whatever still runs in it)."""
    name = f"fastsal-ray-{os.getpid()}-{time.monotonic_ns() % 10**9}"
    _ip("netns", "add", name)
    try:
        _ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
        yield name
    finally:
        kill_namespace_processes(name)
        subprocess.run(["ip", "netns", "del", name], timeout=30, capture_output=True)


def namespace_pids(name: str) -> list[int]:
    """PIDs of the processes in namespace ``name`` (all started by the test that made it)."""
    out = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, timeout=30).stdout
    return [int(p) for p in out.split()]


def kill_namespace_processes(name: str, grace_s: float = 10.0) -> None:
    """SIGTERM every process in the namespace by PID, SIGKILL the ones alive after ``grace_s``."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        pids = namespace_pids(name)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while pids and time.monotonic() < deadline:
            pids = namespace_pids(name)
            time.sleep(0.2)
        if not pids:
            return


def _setns(path: str) -> None:
    """Move the calling thread into the network namespace at ``path`` (Python 3.11 has no os.setns)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


@contextlib.contextmanager
def in_process_cluster(num_cpus: int = 2) -> Iterator[str]:
    """``ray.init`` in this process, inside a loopback-only namespace; yields the GCS address.

    Everything Ray starts (GCS, raylet, workers) is a child of this process in the namespace; it
    is stopped by ``ray.shutdown()`` and then, by PID, whatever remains in the namespace.
    """
    use_ray_env()
    import ray

    own = f"/proc/self/task/{threading.get_native_id()}/ns/net"
    back = os.open(own, os.O_RDONLY)  # keep our own namespace open to return to it
    temp = tempfile.mkdtemp(prefix="fsray-")  # Ray's session folder, not /tmp/ray; short for its sockets
    try:
        with loopback_namespace() as ns:
            _setns(f"/run/netns/{ns}")
            try:
                # ray.init installs its own SIGTERM/SIGINT handlers in this process: put ours back after,
                # or later tests (and their Ctrl-C / SIGTERM checks) run with Ray's
                handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
                ray.init(num_cpus=num_cpus, include_dashboard=False, object_store_memory=OBJECT_STORE_BYTES,
                         _node_ip_address="127.0.0.1", _temp_dir=temp, log_to_driver=False,
                         configure_logging=False)
                try:
                    yield ray.get_runtime_context().gcs_address
                finally:
                    ray.shutdown()
                    for sig, handler in handlers.items():
                        signal.signal(sig, handler)
            finally:
                _setns(f"/proc/self/fd/{back}")
    finally:
        os.close(back)
        shutil.rmtree(temp, ignore_errors=True)


def _ray_bin() -> str:
    path = Path(sys.executable).with_name("ray")
    if not path.is_file():
        pytest.skip(f"no `ray` command beside {sys.executable}: pip install 'fastsal[ray]'")
    return str(path)


class LoopbackCluster:
    """A Ray cluster of real nodes (``ray start``) on 127.0.0.1 in a namespace with only ``lo``.

    ``with LoopbackCluster(workers=2) as c:`` starts a head and ``workers`` worker nodes; run a
    driver in it with :meth:`command` (``ip netns exec``); :meth:`kill_worker` loses a node
    abruptly (SIGKILL to its whole process tree). Every process is stopped by its PID on exit.
    """

    PORT = 6379

    def __init__(self, workers: int = 2, *, head_cpus: int = 1, worker_cpus: int = 1, start_s: float = 120.0,
                 env: dict[str, str] | None = None) -> None:
        self.workers, self.head_cpus, self.worker_cpus, self.start_s = workers, head_cpus, worker_cpus, start_s
        self.env = {**os.environ, **RAY_ENV, **FAST_NODE_DEATH, **(env or {})}
        self.address = f"127.0.0.1:{self.PORT}"
        self.nodes: list[subprocess.Popen] = []
        self._stack = contextlib.ExitStack()
        self.ns = ""
        self.temp = ""

    def __enter__(self) -> "LoopbackCluster":
        try:
            self.temp = tempfile.mkdtemp(prefix="fsray-")  # short: Ray's socket paths must fit 107 bytes
            self._stack.callback(shutil.rmtree, self.temp, True)
            self.ns = self._stack.enter_context(loopback_namespace())
            self._stack.callback(self._stop_nodes)
            self._start(["--head", f"--port={self.PORT}", f"--num-cpus={self.head_cpus}"])
            for _ in range(self.workers):
                self._start([f"--address={self.address}", f"--num-cpus={self.worker_cpus}"])
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def command(self, *args: str) -> list[str]:
        """``args`` as a command run inside the cluster's namespace."""
        return ["ip", "netns", "exec", self.ns, *args]

    def _start(self, args: list[str]) -> None:
        """One node: ``ray start --block`` (stays in the foreground, parent of the node's processes),
        returned once it says the runtime started."""
        head = ["--include-dashboard=false", f"--temp-dir={self.temp}"] if "--head" in args else []  # head-only
        cmd = self.command(_ray_bin(), "start", "--block", "--node-ip-address=127.0.0.1", "--disable-usage-stats",
                           f"--object-store-memory={OBJECT_STORE_BYTES}", *head, *args)
        log = open(Path(self.temp) / f"node-{len(self.nodes)}.log", "w+")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        self.nodes.append(proc)
        deadline = time.monotonic() + self.start_s
        while time.monotonic() < deadline:
            log.seek(0)
            text = log.read()
            if "Ray runtime started" in text:
                log.close()
                return
            if proc.poll() is not None:
                break
            time.sleep(0.3)
        log.close()
        raise AssertionError(f"ray start {' '.join(args)} did not start within {self.start_s:.0f} s:\n{text[-3000:]}")

    def node_pids(self, index: int) -> list[int]:
        """PIDs of node ``index`` (0 = head): its ``ray start`` process and every descendant."""
        import psutil

        root = self.nodes[index]
        try:
            kids = psutil.Process(root.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        return [root.pid, *(k.pid for k in kids)]

    def kill_worker(self, index: int = 1) -> list[int]:
        """Lose worker node ``index`` (1..workers) at once: SIGKILL to each of its PIDs; returns them."""
        pids = self.node_pids(index)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.nodes[index].wait(timeout=30)
        return pids

    def _stop_nodes(self) -> None:
        """Workers first, then the head: SIGTERM by PID (``ray start --block`` stops its node), then
        SIGKILL after a grace period; what remains in the namespace is killed by loopback_namespace."""
        for proc in reversed(self.nodes):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(self.nodes):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
