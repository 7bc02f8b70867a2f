"""Forward the host's 127.0.0.1:PORT to 127.0.0.1:PORT inside another network namespace.

The test cluster's daemons run in a network namespace that has only `lo`, because Slurm listens
on all addresses and cannot be told otherwise. Client commands on the host (sbatch, squeue,
scontrol, scancel, sinfo) only ever talk to slurmctld over connections they open themselves, so
forwarding slurmctld's one port is enough for them.

Usage: python3 nsfwd.py NETNS_PID PORT PIDFILE

The listening socket is made in the host namespace, then the process enters the cluster's
namespace, so that every socket it opens from then on (the connections to slurmctld) lives there.
Standard library only: it runs under whichever python3 is first on PATH.
"""

import contextlib
import ctypes
import os
import socket
import sys
import threading

CLONE_NEWNET = 0x40000000


def enter_netns(pid: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into the network namespace of {pid}: {os.strerror(err)}")
    finally:
        os.close(fd)


def copy(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        # Pass the end of stream on, so the other direction can still finish (half close).
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def serve(client: socket.socket, port: int) -> None:
    with client:
        try:
            upstream = socket.create_connection(("127.0.0.1", port), timeout=10)
        except OSError:
            return
        with upstream:
            upstream.settimeout(None)
            back = threading.Thread(target=copy, args=(upstream, client), daemon=True)
            back.start()
            copy(client, upstream)
            back.join()


def main() -> None:
    netns_pid, port, pidfile = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))  # the host's loopback only
    listener.listen(128)
    # Threads started after this inherit the namespace of the thread that entered it.
    enter_netns(netns_pid)
    with open(pidfile, "w") as f:
        f.write(f"{os.getpid()}\n")
    while True:
        client, _ = listener.accept()
        threading.Thread(target=serve, args=(client, port), daemon=True).start()


if __name__ == "__main__":
    main()
