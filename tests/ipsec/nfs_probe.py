#!/usr/bin/env python3
"""A minimal NFSv4.0 client for tests on hosts without a kernel NFS client (this machine's kernel has none).

Speaks ONC RPC over TCP to SERVER:2049 with AUTH_SYS as root: a NULL call, then one COMPOUND
PUTROOTFH, LOOKUP each component of PATH, GETATTR(size). Prints "null ok" and "status=N size=S" and exits 0 only
when the COMPOUND succeeded. Usage: nfs_probe.py SERVER PATH (PATH relative to the NFSv4 pseudo root, e.g.
"proj/f").
"""
import socket
import struct
import sys

PROG_NFS, VERS4 = 100003, 4
OP_GETATTR, OP_LOOKUP, OP_PUTROOTFH = 9, 15, 24
FATTR4_SIZE_BIT = 1 << 4


def opaque(b):
    pad = (4 - len(b) % 4) % 4
    return struct.pack(">I", len(b)) + b + b"\0" * pad


def call(sock, xid, proc, body):
    cred = struct.pack(">I", 0) + opaque(b"probe") + struct.pack(">III", 0, 0, 0)  # stamp, name, uid, gid, no gids
    msg = struct.pack(">IIIIII", xid, 0, 2, PROG_NFS, VERS4, proc) + struct.pack(">I", 1) + opaque(cred) + \
        struct.pack(">II", 0, 0) + body
    sock.sendall(struct.pack(">I", 0x80000000 | len(msg)) + msg)
    data = b""
    last = False
    while not last:
        hdr = recv_exact(sock, 4)
        (mark,) = struct.unpack(">I", hdr)
        last = bool(mark & 0x80000000)
        data += recv_exact(sock, mark & 0x7FFFFFFF)
    rxid, mtype, rstat = struct.unpack(">III", data[:12])
    if rxid != xid or mtype != 1 or rstat != 0:
        raise SystemExit(f"bad reply: xid={rxid} type={mtype} reply_stat={rstat}")
    _, vlen = struct.unpack(">II", data[12:20])
    pos = 20 + vlen + (4 - vlen % 4) % 4
    (accept,) = struct.unpack(">I", data[pos:pos + 4])
    if accept != 0:
        raise SystemExit(f"call not accepted: accept_stat={accept}")
    return data[pos + 4:]


def recv_exact(sock, n):
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise SystemExit("server closed the connection")
        out += chunk
    return out


def main():
    server, path = sys.argv[1], sys.argv[2]
    sock = socket.create_connection((server, 2049), timeout=10)
    call(sock, 1, 0, b"")
    print("null ok")
    ops = [struct.pack(">I", OP_PUTROOTFH)]
    comps = [c for c in path.split("/") if c]
    ops += [struct.pack(">I", OP_LOOKUP) + opaque(c.encode()) for c in comps]
    ops.append(struct.pack(">III", OP_GETATTR, 1, FATTR4_SIZE_BIT))
    res = call(sock, 2, 1, opaque(b"") + struct.pack(">II", 0, len(ops)) + b"".join(ops))
    (status,) = struct.unpack(">I", res[:4])
    size = -1
    if status == 0:
        (taglen,) = struct.unpack(">I", res[4:8])
        pos = 8 + taglen + (4 - taglen % 4) % 4 + 4  # tag, resarray count
        pos += 8 * (1 + len(comps))  # PUTROOTFH and LOOKUPs: opcode, status
        pos += 8  # GETATTR opcode, status
        (nwords,) = struct.unpack(">I", res[pos:pos + 4])
        pos += 4 + 4 * nwords + 4  # bitmap, attr_vals length
        (size,) = struct.unpack(">Q", res[pos:pos + 8])
    print(f"status={status} size={size}")
    return 0 if status == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
