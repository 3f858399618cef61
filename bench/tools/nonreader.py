#!/usr/bin/env python3
"""Memory a server holds for clients that never read (issue 10's figure).

Starts the `latch` demo (or any server taking -h HOST -p PORT with a
POST /echo route), connects N clients with a small receive buffer, each
pipelines K POST /echo requests of B bytes and never reads, for 8 s, then
prints the server's RSS (from /proc) at start, with the clients, and 2 s
after they left. Bounded: 8 s of sending, then everything stops.

    python3 bench/tools/nonreader.py build/latch 18091
"""
import socket
import subprocess
import sys
import time

N, K, B = 8, 64, 1000000


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) // 1024
    return -1


def main():
    binp, port = sys.argv[1], int(sys.argv[2])
    srv = subprocess.Popen([binp, "-h", "127.0.0.1", "-p", str(port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        print("RSS at start: %d MiB" % rss_mib(srv.pid))
        req = (b"POST /echo HTTP/1.1\r\nHost: t\r\n"
               b"Content-Type: application/octet-stream\r\n"
               b"Content-Length: %d\r\n\r\n" % B) + b"x" * B
        socks = []
        for _ in range(N):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
            s.connect(("127.0.0.1", port))
            s.setblocking(False)
            socks.append(s)
        sent = [0] * N
        total = K * len(req)
        t0 = time.time()
        while time.time() - t0 < 8:
            for i, s in enumerate(socks):
                if sent[i] >= total:
                    continue
                off = sent[i] % len(req)
                try:
                    sent[i] += s.send(req[off:off + 262144])
                except (BlockingIOError, ConnectionError):
                    pass
            time.sleep(0.01)
        print("MiB each client got in before the server stopped reading:",
              [x >> 20 for x in sent])
        print("RSS with %d non-reading clients: %d MiB" % (N, rss_mib(srv.pid)))
        for s in socks:
            s.close()
        time.sleep(2)
        print("RSS 2 s after they left: %d MiB" % rss_mib(srv.pid))
    finally:
        srv.terminate()
        srv.wait()


if __name__ == "__main__":
    main()
