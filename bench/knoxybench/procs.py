"""Processes of one scenario: started pinned where asked, stopped together, measured from /proc."""
import os
import socket
import subprocess
import time
import urllib.request

HZ = os.sysconf("SC_CLK_TCK")


class Pins:
    """Where each role runs: the system under test on one CPU, load and backends on another.

    With fewer than 2 CPUs, or when a scenario runs the system on every CPU, nothing is pinned.
    """

    def __init__(self, enabled):
        self.enabled = enabled and os.cpu_count() >= 2
        self.sut = "0" if self.enabled else None
        self.other = str(os.cpu_count() - 1) if self.enabled else None

    def describe(self):
        if not self.enabled:
            return "nothing pinned"
        return f"system under test on CPU {self.sut}; load generator and backend on CPU {self.other}"


def taskset(cpu, argv):
    return (["taskset", "-c", cpu] if cpu is not None else []) + list(argv)


class Ports:
    """Hands out loopback ports from a base, skipping any that something already listens on."""

    def __init__(self, base):
        self.next_port = base

    def take(self):
        while True:
            port, self.next_port = self.next_port, self.next_port + 1
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                    return port
                except OSError:
                    continue


class Procs:
    """The processes of one scenario; `stop` ends them all (they die with bench/run too)."""

    def __init__(self, work):
        self.work = work
        self.running = []

    def start(self, name, argv, cpu=None, env=None):
        log = open(os.path.join(self.work, f"{name}.log"), "wb")
        proc = subprocess.Popen(taskset(cpu, argv), stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})}, start_new_session=True)
        proc.name = name
        proc.log_tail = lambda: self.log(name)[-400:].strip()
        self.running.append(proc)
        return proc

    def log(self, name):
        with open(os.path.join(self.work, f"{name}.log"), errors="replace") as f:
            return f.read()

    def stop_one(self, pid):
        """Stops the process `pid` started (and its group) before the others."""
        for proc in [p for p in self.running if p.pid == pid]:
            _kill(proc)
            self.running.remove(proc)

    def stop(self):
        for proc in self.running:
            _kill(proc)
        self.running = []


def _kill(proc):
    # SIGKILL to the group: a measured server's graceful drain is not measured, only waited for.
    try:
        os.killpg(proc.pid, 9)
    except ProcessLookupError:
        pass
    proc.wait()


def children(pid):
    """The processes whose parent is `pid` (nginx's workers, which do its work)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return found


def cpu_seconds(pids):
    """utime + stime of the processes (all their threads), in seconds."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / HZ


def tree_cpu_seconds(pid):
    """CPU of a master process, the children it has reaped (old workers of a reload) and the
    children it has now, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / HZ + cpu_seconds(children(pid))


def peak_rss_mb(pids):
    """The sum of the processes' peak resident sets (VmHWM), in MB."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
    return total / 1024


def wait_until(check, what, timeout=30.0, proc=None, every=0.05):
    """Polls `check` until it is true; fails naming `what` after `timeout` seconds, or at once
    with the end of its log when `proc` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, ValueError):  # not listening yet, or a half-written answer
            pass
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: {proc.name} exited ({proc.returncode}): {proc.log_tail()}")
        time.sleep(every)
    raise RuntimeError(f"timed out waiting for {what}")


def answers(url, host=None, timeout=2.0):
    """True when a GET of `url` (with Host `host`) answers 2xx."""
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return 200 <= response.status < 300
    except (OSError, ValueError):
        return False


def require_free(*ports):
    """Fails when something already listens on a port: it would be measured instead."""
    taken = [p for p in ports if listening(p)]
    if taken:
        raise RuntimeError(f"port(s) {', '.join(map(str, taken))} on 127.0.0.1 already in use: stop what listens there")


def listening(port):
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0
