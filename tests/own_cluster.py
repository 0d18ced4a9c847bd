"""A Redis Cluster of a test's own: six ``redis-server --cluster-enabled yes`` processes (three masters, a replica
each) in a temporary directory, made a cluster by ``redis-cli --cluster create``. A test may kill a master by its
pid (its replica is promoted within ``cluster-node-timeout``) and start it again (it rejoins, as a replica)."""

from __future__ import annotations

import random
import socket
import subprocess
import time
from pathlib import Path

import redis

__all__ = ["RedisCluster"]

_NODES = 6
_NODE_TIMEOUT_MS = 1000


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _cluster_ports(count: int) -> list[int]:
    """Free ports whose cluster bus ports (port + 10000) are free too."""
    ports: list[int] = []
    while len(ports) < count:
        port = random.randrange(20_000, 45_000)
        if port not in ports and _bindable(port) and _bindable(port + 10_000):
            ports.append(port)
    return ports


def _wait(predicate: object, timeout: float, what: str) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


class RedisCluster:
    """Start with :meth:`start`, end with :meth:`stop` (every process it started, by pid)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ports = _cluster_ports(_NODES)
        self.url = f"redis://127.0.0.1:{self.ports[0]}/0"
        self._processes: dict[int, subprocess.Popen[bytes]] = {}

    def _start_node(self, port: int) -> None:
        command = [
            "redis-server",
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(self.directory / f"nodes-{port}.conf"),
            "--cluster-node-timeout", str(_NODE_TIMEOUT_MS),
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "no",
        ]  # fmt: skip
        log = (self.directory / f"redis-{port}.log").open("ab")
        self._processes[port] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=2)

    def start(self) -> None:
        for port in self.ports:
            self._start_node(port)
        for port in self.ports:
            self._wait_ping(port)
        addresses = [f"127.0.0.1:{port}" for port in self.ports]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        self.wait_healthy()

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Until every running node says ``cluster_state:ok`` and every master has a replica in sync."""
        for port in self._processes:
            _wait(lambda p=port: self._state_ok(p), timeout, f"cluster_state:ok on {port}")
        _wait(self._replicas_in_sync, timeout, "every master's replica to be in sync")

    def _state_ok(self, port: int) -> bool:
        with self.client(port) as c:
            info = c.execute_command("CLUSTER", "INFO")
        text = info.decode() if isinstance(info, bytes) else str(info)
        return "cluster_state:ok" in text

    def _replicas_in_sync(self) -> bool:
        synced = 0
        for port in self._processes:
            with self.client(port) as c:
                info = c.info("replication")
            if info.get("role") == "slave" and info.get("master_link_status") == "up":
                synced += 1
        return synced >= _NODES // 2

    def master_of(self, key: str) -> int:
        """The port of the master that owns ``key``'s slot now."""
        with self.client(self.alive()[0]) as c:
            slot = int(c.execute_command("CLUSTER", "KEYSLOT", key))
            for start, end, master, *_ in c.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    return int(master[1])
        raise AssertionError(f"no node owns slot {slot}")

    def alive(self) -> list[int]:
        return [port for port, p in self._processes.items() if p.poll() is None]

    def kill(self, port: int) -> None:
        """SIGKILL one node (a process of this cluster's own), and wait until it is gone."""
        process = self._processes.pop(port)
        process.kill()
        process.wait(10)

    def restart(self, port: int) -> None:
        """Start a killed node again: it keeps its identity (its nodes file) and rejoins the cluster."""
        self._start_node(port)
        self._wait_ping(port)

    def _wait_ping(self, port: int) -> None:
        def answers() -> bool:
            with self.client(port) as c:
                return bool(c.ping())

        _wait(answers, 10, f"redis-server on {port}")

    def stop(self) -> None:
        for process in self._processes.values():
            if process.poll() is None:
                process.kill()
        for process in self._processes.values():
            process.wait(10)
        self._processes.clear()
