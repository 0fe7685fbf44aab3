#!/usr/bin/env python3
"""Tries a plaintext TCP connection that the local IPsec policy would otherwise encrypt: the socket gets its own
XFRM policy "allow, no template" for output (IP_XFRM_POLICY, what charon does for its IKE sockets; needs
CAP_NET_ADMIN), so its packets leave unencrypted with this host's address. Prints one line and exits 0:
  connected | timeout | error <errno name>
Usage: plaintext_connect.py HOST PORT TIMEOUT_SECONDS
"""
import errno
import socket
import struct
import sys

IP_XFRM_POLICY = 17
XFRM_POLICY_OUT = 1
XFRM_POLICY_ALLOW = 0
XFRM_INF = 0xFFFFFFFFFFFFFFFF


def bypass_policy():
    # struct xfrm_userpolicy_info (linux/xfrm.h): selector (56 bytes: addresses, ports, family AF_INET, prefix
    # lengths 0 = any), lifetime_cfg (8 x u64, all infinite), lifetime_cur (4 x u64), priority, index, dir, action,
    # flags, share, padded to 8 bytes.
    selector = struct.pack("=16s16sHHHHHBBBxxxiI", b"", b"", 0, 0, 0, 0, socket.AF_INET, 0, 0, 0, 0, 0)
    lifetime_cfg = struct.pack("=8Q", *([XFRM_INF] * 8))
    lifetime_cur = struct.pack("=4Q", 0, 0, 0, 0)
    tail = struct.pack("=IIBBBB", 0, 0, XFRM_POLICY_OUT, XFRM_POLICY_ALLOW, 0, 0)
    info = selector + lifetime_cfg + lifetime_cur + tail
    return info + b"\0" * (-len(info) % 8)


def main():
    host, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.IPPROTO_IP, IP_XFRM_POLICY, bypass_policy())
    s.settimeout(timeout)
    try:
        s.connect((host, port))
        print("connected", flush=True)
    except socket.timeout:
        print("timeout", flush=True)
    except OSError as e:
        print("error", errno.errorcode.get(e.errno, str(e.errno)), flush=True)
    finally:
        s.close()


if __name__ == "__main__":
    main()
