#!/usr/bin/env python3
"""TCP throughput between two rig hosts (no iperf3 in Debian's base set here).

  tcp_throughput.py sink PORT        accept one connection, read to EOF, print "BYTES SECONDS" (first byte to EOF)
  tcp_throughput.py send HOST PORT MB send MB MiB of zeros and close
"""
import socket
import sys
import time


def sink(port):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(1)
    print("listening", flush=True)
    conn, _ = srv.accept()
    total, start = 0, None
    buf = bytearray(1 << 20)
    while True:
        n = conn.recv_into(buf)
        if n == 0:
            break
        if start is None:
            start = time.monotonic()
        total += n
    print(total, time.monotonic() - (start or time.monotonic()), flush=True)


def send(host, port, mib):
    s = socket.create_connection((host, port), timeout=60)
    chunk = b"\0" * (1 << 20)
    for _ in range(mib):
        s.sendall(chunk)
    s.shutdown(socket.SHUT_WR)
    s.recv(1)
    s.close()


if __name__ == "__main__":
    if sys.argv[1] == "sink":
        sink(int(sys.argv[2]))
    else:
        send(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
