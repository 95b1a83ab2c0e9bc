"""
Helpers shared by the fault tests (tests/fault/test_fault_*.py): a Postern whose data
directory is a small tmpfs, resource limits, and process memory readings.

Kept out of a conftest.py on purpose: tests/conftest.py is imported as the module "conftest"
and the tests import from it by that name; a second conftest.py would shadow it.
"""
import contextlib
import os
import resource
import subprocess
import tempfile

from conftest import GENEROUS, Postern, base_dir, finish, rss_kib  # noqa: F401 (re-exported)


@contextlib.contextmanager
def tmpfs_postern(size="4m", limits=None, extra=None, start=True):
    """A Postern whose data_dir is a fresh tmpfs of `size` mounted for this test only (the tests
    run as root); always stopped, checked for sanitizer reports and unmounted afterwards."""
    if os.geteuid() != 0:
        raise AssertionError("the disk-full tests mount a tmpfs and must run as root")
    d = tempfile.mkdtemp(prefix="fault-", dir=base_dir())
    os.chmod(d, 0o755)
    data = os.path.join(d, "data")
    os.mkdir(data)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0750" % size, "tmpfs", data],
                   check=True, capture_output=True, timeout=30)
    p = None
    try:
        lim = dict(GENEROUS)
        lim.update(limits or {})
        p = Postern(d, limits=lim, extra=extra)
        if start:
            p.start()
        yield p
    finally:
        try:
            if p is not None:
                finish(p)
        finally:
            r = subprocess.run(["umount", data], capture_output=True, timeout=30)
            if r.returncode != 0:
                subprocess.run(["umount", "-l", data], capture_output=True, timeout=30)


def fill_disk(path, chunk=64 * 1024):
    """Write zeros to `path` until the filesystem is full; returns the bytes written. Bounded by
    the size of the filesystem (statvfs), so the loop ends even if ENOSPC never came."""
    st = os.statvfs(os.path.dirname(path))
    limit = st.f_blocks * st.f_frsize + chunk
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        buf = b"\0" * chunk
        while written < limit:
            try:
                n = os.write(fd, buf)
            except OSError:
                if len(buf) == 1:
                    break
                buf = buf[: max(1, len(buf) // 16)]  # fill the last partial pages too
                continue
            written += n
    finally:
        os.close(fd)
    return written


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def raise_nofile(n):
    """Raise this process's RLIMIT_NOFILE soft limit to at least n (up to the hard limit, which
    root may raise too); returns the previous (soft, hard) to restore."""
    old = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft, hard = old
    if soft < n:
        if hard != resource.RLIM_INFINITY and hard < n:
            hard = n
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))
    return old


def still_serves(p, source=None, port=None):
    """A good client gets a greeting and a 250 to NOOP (the server survived what came before)."""
    assert p.alive(), "postern serve died; stderr tail:\n%s" % p.stderr()[-4000:]
    c = p.raw(port=port or p.smtp_port, source=source)
    try:
        assert c.cmd("EHLO good.example.test").code == 250
        assert c.cmd("NOOP").code == 250
        c.cmd("QUIT")
    finally:
        c.close()


def limit_nofile(p, n):
    """Make `p` (a Postern not yet started) run `postern` with RLIMIT_NOFILE = n (soft and hard):
    a wrapper script that sets the limit and execs the binary, so the limit applies to the server
    alone (the test process keeps its own; prlimit on the running server is refused once it
    has dropped to the service user, and we lack CAP_SYS_RESOURCE)."""
    wrapper = os.path.join(p.dir, "postern-nofile-%d" % n)
    with open(wrapper, "w") as f:
        f.write("#!/bin/sh\nulimit -n %d || exit 99\nexec %s \"$@\"\n" % (n, p.bin))
    os.chmod(wrapper, 0o755)
    p.bin = wrapper
    return p


def nofile_limit_of(pid):
    """The soft RLIMIT_NOFILE of a running process, from /proc/PID/limits."""
    with open("/proc/%d/limits" % pid) as f:
        for line in f:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    raise AssertionError("no open-files limit for pid %d" % pid)


def open_fds(pid):
    """How many descriptors a process has open."""
    return len(os.listdir("/proc/%d/fd" % pid))


def cpu_seconds(pid):
    """User + system CPU time a process has used, in seconds (/proc/PID/stat)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fd_targets(pid):
    """What each of a process's descriptors points to (readlink of /proc/PID/fd/*): paths,
    'socket:[INODE]', 'pipe:[INODE]', 'anon_inode:...'. Descriptors closed meanwhile are skipped."""
    out = []
    d = "/proc/%d/fd" % pid
    for name in os.listdir(d):
        try:
            out.append(os.readlink(os.path.join(d, name)))
        except OSError:
            pass
    return out


def tcp_connections_of(pid):
    """The TCP sockets a process holds that are not listening, as a list of state names
    (ESTABLISHED, CLOSE_WAIT, ...): client connections it has not closed. From /proc/net/tcp and
    tcp6, matched by socket inode."""
    states = {"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1",
              "05": "FIN_WAIT2", "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT",
              "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING"}
    by_inode = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    by_inode[fields[9]] = states.get(fields[3], fields[3])
        except OSError:
            pass
    out = []
    for t in fd_targets(pid):
        if t.startswith("socket:["):
            st = by_inode.get(t[8:-1])
            if st is not None and st != "LISTEN":
                out.append(st)
    return out
