"""Sandbox launcher (``python -I _sandbox_boot.py WORKDIR CPU_S MEMORY_MB FILE_MB NPROC PYTHON AS_UID``).

Locks its own process down (network namespace, root dropped, rlimits, Landlock) and then replaces
itself with a fresh interpreter running ``WORKDIR/main.py``. Exit status 3 with a ``sandbox:`` line
on stderr means the lock-down itself failed and nothing ran. Standard library only: it must not
import llmkit (the sandboxed interpreter gets nothing but the code).
"""

import ctypes
import os
import resource
import signal
import struct
import sys

CLONE_NEWUSER, CLONE_NEWNET, CLONE_NEWPID = 0x10000000, 0x40000000, 0x20000000
SYS_CREATE_RULESET, SYS_ADD_RULE, SYS_RESTRICT_SELF = 444, 445, 446
PR_SET_NO_NEW_PRIVS, PR_CAPBSET_DROP = 38, 24
READ = (1 << 0) | (1 << 2) | (1 << 3)  # execute, read file, read dir


def fail(what: str) -> None:
    print(f"sandbox: {what}; the python tool needs Linux namespaces and Landlock (5.13+)", file=sys.stderr)
    sys.exit(3)


def isolate(libc) -> None:
    """New network and PID namespaces (a user namespace too when not root). The caller then forks:
    the child is PID 1 of the new namespace, so every process the code starts dies with it."""
    uid, gid = os.geteuid(), os.getegid()
    flags = CLONE_NEWNET | CLONE_NEWPID | (0 if uid == 0 else CLONE_NEWUSER)
    if libc.unshare(flags) != 0:
        fail(f"cannot create network and PID namespaces ({os.strerror(ctypes.get_errno())})")
    if uid != 0:  # an unprivileged user maps itself into the new user namespace
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)


def drop_capabilities(libc) -> None:
    """No capabilities, now or after exec: root can no longer re-enter the host's namespaces,
    read around file permissions or signal other users' processes."""
    for cap in range(64):
        libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
    header = struct.pack("Ii", 0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = bytes(24)  # effective, permitted, inheritable = 0 (two 32-bit words each)
    if libc.capset(header, data) != 0:
        fail(f"cannot drop capabilities ({os.strerror(ctypes.get_errno())})")


def limit_resources(cpu: int, memory_mb: int, file_mb: int, nproc: int) -> None:
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_mb << 20, file_mb << 20))
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def readable_roots(python: str) -> list[str]:
    """What the code may read: the interpreter and system libraries, nothing of /home, /root, /etc."""
    roots = {os.path.dirname(os.path.dirname(os.path.realpath(python)))}
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        roots |= {sys.base_prefix, sys.prefix}
    roots |= {"/usr", "/lib", "/lib64", "/bin", "/dev"}
    return sorted(r for r in roots if os.path.exists(r))


def landlock(libc, writable: str, python: str) -> None:
    """Reads only under :func:`readable_roots`, writes only in ``writable``; no TCP bind/connect and
    no signals or abstract sockets outside the sandbox where the kernel's Landlock ABI has them."""
    libc.syscall.restype = ctypes.c_long
    abi = libc.syscall(SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    if abi < 1:
        fail("Landlock is not available in this kernel")
    fs = (1 << 13) - 1  # ABI 1: execute .. make_sym
    fs |= (1 << 13) if abi >= 2 else 0  # refer
    fs |= (1 << 14) if abi >= 3 else 0  # truncate
    fs |= (1 << 15) if abi >= 5 else 0  # ioctl_dev
    fields = [fs] + ([0b11] if abi >= 4 else []) + ([0b11] if abi >= 6 else [])  # net: bind/connect tcp; scope
    attr = struct.pack(f"{len(fields)}Q", *fields)
    ruleset = libc.syscall(SYS_CREATE_RULESET, attr, ctypes.c_size_t(len(attr)), ctypes.c_uint32(0))
    if ruleset < 0:
        fail(f"cannot create a Landlock ruleset ({os.strerror(ctypes.get_errno())})")
    for path, access in [*((r, READ) for r in readable_roots(python)), (writable, fs)]:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        rule = struct.pack("=Qi", access, fd)
        if libc.syscall(SYS_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(1), rule, ctypes.c_uint32(0)) != 0:
            fail(f"cannot add a Landlock rule for {path} ({os.strerror(ctypes.get_errno())})")
        os.close(fd)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        fail("cannot set no_new_privs")
    if libc.syscall(SYS_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)) != 0:
        fail(f"cannot apply the Landlock ruleset ({os.strerror(ctypes.get_errno())})")
    os.close(ruleset)


def main() -> None:
    work, cpu, memory_mb, file_mb, nproc = sys.argv[1], *map(int, sys.argv[2:6])
    python, as_uid = sys.argv[6], int(sys.argv[7])
    libc = ctypes.CDLL(None, use_errno=True)
    isolate(libc)
    pid = os.fork()
    if pid:  # outside: wait for the namespace's PID 1 and report how it ended
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            if sig not in (signal.SIGKILL, signal.SIGSTOP):  # these two keep their action anyway
                signal.signal(sig, signal.SIG_DFL)
            os.kill(os.getpid(), sig)
        sys.exit(os.WEXITSTATUS(status))
    if as_uid >= 0:  # root hands the code to an ordinary user: no capabilities, and NPROC applies
        os.setgroups([])
        os.setgid(as_uid)
        os.setuid(as_uid)
    else:
        drop_capabilities(libc)
    landlock(libc, work, python)
    limit_resources(cpu, memory_mb, file_mb, nproc)
    signal.signal(signal.SIGXCPU, signal.SIG_DFL)  # a parent that ignores it would leave only the hard limit's SIGKILL
    os.chdir(work)
    os.execv(python, [python, "-I", "-B", "main.py"])


if __name__ == "__main__":
    main()
