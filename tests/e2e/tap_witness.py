#!/usr/bin/env python3
"""Counts the IPv4 frames from SRC that reach interface IFACE (a VM's tap, from the node's side: what the switch
delivered towards that VM), until STOP_FILE exists. Prints "ready" once listening, then one line: "from_src=N".
Run it in the node's network namespace. Usage: tap_witness.py IFACE SRC STOP_FILE
"""
import os
import select
import socket
import sys

ETH_P_IP = 0x0800


def main():
    iface, src, stop = sys.argv[1], socket.inet_aton(sys.argv[2]), sys.argv[3]
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP))
    s.bind((iface, 0))
    print("ready", flush=True)
    count = 0
    while not os.path.exists(stop):
        r, _, _ = select.select([s], [], [], 0.05)
        if not r:
            continue
        frame, addr = s.recvfrom(65535)
        # PACKET_OUTGOING (4): frames the node sends into the tap, i.e. towards the VM.
        if addr[2] != socket.PACKET_OUTGOING or len(frame) < 34:
            continue
        if frame[26:30] == src:
            count += 1
    print(f"from_src={count}", flush=True)


if __name__ == "__main__":
    main()
