#!/usr/bin/env python3
"""Counts the IPv4 packets between two addresses seen on every interface of the current network namespace (run it in
the rig's switch namespace), by kind, until STOP_FILE exists. A may also be a subnet "a.b.c.d/len" (e.g. every
workload of a node, whose addresses are not known in advance). Prints one line:
  ike_esp=N other=M sensitive=K raw_esp=R dropped=D others=KIND,...
ike_esp: UDP from or to port 500 or 4500, or IP protocol 50 (ESP); other: anything else between the two; sensitive:
those of "other" that are TCP or UDP to or from 2049 (NFS), 6817 or 6818 (Slurm); raw_esp: those of "ike_esp" that
are IP protocol 50 (Strongroom's tunnel always encapsulates ESP in UDP 4500, so none are expected); dropped: frames
the kernel dropped because this reader fell behind (PACKET_STATISTICS; the counts are only complete when it is 0);
others: what "other" was, as proto/port/direction:count with B's port (e.g. tcp/7445/to-b:12), "-" when none.
Usage: capture.py A B STOP_FILE [IFACES]   (IFACES: a comma-separated list; only frames on those interfaces count)
"""
import os
import select
import socket
import struct
import sys

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_STATISTICS = 6
SO_RCVBUFFORCE = 33
SENSITIVE = {2049, 6817, 6818}


def parse_a(text):
    addr, _, bits = text.partition("/")
    n = int(bits) if bits else 32
    mask = (0xFFFFFFFF << (32 - n)) & 0xFFFFFFFF
    return struct.unpack(">I", socket.inet_aton(addr))[0] & mask, mask


class Counts:
    def __init__(self, a, b):
        (self.a_net, self.a_mask), self.b = a, b
        self.ike_esp = self.other = self.sensitive = self.raw_esp = 0
        self.kinds = {}

    def in_a(self, addr):
        return struct.unpack(">I", addr)[0] & self.a_mask == self.a_net

    def add(self, frame):
        if len(frame) < 34 or frame[12:14] != b"\x08\x00":
            return
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        proto, src, dst = ip[9], ip[12:16], ip[16:20]
        if not ((src == self.b and self.in_a(dst)) or (dst == self.b and self.in_a(src))):
            return
        ports = set()
        b_port = None
        if proto in (6, 17) and len(ip) >= ihl + 4:
            sport, dport = struct.unpack(">HH", ip[ihl:ihl + 4])
            ports = {sport, dport}
            b_port = sport if src == self.b else dport
        if proto == 50 or (proto == 17 and ports & {500, 4500}):
            self.ike_esp += 1
            if proto == 50:
                self.raw_esp += 1
        else:
            self.other += 1
            if ports & SENSITIVE:
                self.sensitive += 1
            kind = {6: "tcp", 17: "udp"}.get(proto, f"proto{proto}") + (f"/{b_port}" if b_port is not None else "")
            kind += "/to-b" if dst == self.b else "/from-b"
            self.kinds[kind] = self.kinds.get(kind, 0) + 1


def main():
    a, b, stop = parse_a(sys.argv[1]), socket.inet_aton(sys.argv[2]), sys.argv[3]
    only = set(sys.argv[4].split(",")) if len(sys.argv) > 4 else None
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    # A large buffer, so that bulk transfers (NFS writes) are not dropped while Python catches up.
    s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
    s.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)  # reading resets the kernel's counters: count from here
    print("capturing", flush=True)
    c = Counts(a, b)
    while not os.path.exists(stop):
        r, _, _ = select.select([s], [], [], 0.05)
        if r:
            frame, addr = s.recvfrom(65535)
            if only is None or addr[0] in only:
                c.add(frame)
    while select.select([s], [], [], 0)[0]:  # what is still queued
        frame, addr = s.recvfrom(65535)
        if only is None or addr[0] in only:
            c.add(frame)
    _, dropped = struct.unpack("II", s.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
    others = ",".join(f"{k}:{v}" for k, v in sorted(c.kinds.items())) or "-"
    print(f"ike_esp={c.ike_esp} other={c.other} sensitive={c.sensitive} raw_esp={c.raw_esp} dropped={dropped} "
          f"others={others}", flush=True)


if __name__ == "__main__":
    main()
