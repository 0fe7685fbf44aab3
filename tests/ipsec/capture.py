#!/usr/bin/env python3
"""Counts the IPv4 packets between two addresses seen on every interface of the current network namespace (run it in
the rig's switch namespace), by kind, until STOP_FILE exists. Prints one line:
  ike_esp=N other=M sensitive=K
ike_esp: UDP from or to port 500 or 4500, or IP protocol 50 (ESP); other: anything else between the two; sensitive:
those of "other" that are TCP or UDP to or from 2049 (NFS), 6817 or 6818 (Slurm). Usage: capture.py A B STOP_FILE
"""
import os
import select
import socket
import struct
import sys

ETH_P_ALL = 0x0003
SENSITIVE = {2049, 6817, 6818}


def main():
    a, b, stop = socket.inet_aton(sys.argv[1]), socket.inet_aton(sys.argv[2]), sys.argv[3]
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    print("capturing", flush=True)
    ike_esp = other = sensitive = 0
    while not os.path.exists(stop):
        r, _, _ = select.select([s], [], [], 0.05)
        if not r:
            continue
        frame = s.recv(65535)
        if len(frame) < 34 or frame[12:14] != b"\x08\x00":
            continue
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        proto, src, dst = ip[9], ip[12:16], ip[16:20]
        if {src, dst} != {a, b}:
            continue
        ports = set()
        if proto in (6, 17) and len(ip) >= ihl + 4:
            ports = set(struct.unpack(">HH", ip[ihl:ihl + 4]))
        if proto == 50 or (proto == 17 and ports & {500, 4500}):
            ike_esp += 1
        else:
            other += 1
            if ports & SENSITIVE:
                sensitive += 1
    print(f"ike_esp={ike_esp} other={other} sensitive={sensitive}", flush=True)


if __name__ == "__main__":
    main()
