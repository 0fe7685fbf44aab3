#!/usr/bin/python3
"""The egress tests' attacker and witnesses (tests/netd/netd_egress_test.cc runs them in the rig).

  capture  OUT READY [--exclude-received IFACE-PREFIX] [--own-stack IFACE] [--stop-file F]
                            a witness: records every frame that carries a probe marker, on every
                            interface of the namespace it runs in, until SIGTERM or until F exists; also listens with
                            raw IP sockets (what the namespace's own stack delivers) and notes
                            frames its stack sends on the interfaces named by --own-stack
  attack   PLAN MANIFEST    the attacker, as root in a workload: every frame a raw socket can build
                            (scapy), described in PLAN (JSON); writes what it sent to MANIFEST
  user     PLAN MANIFEST    the attacker as the job's unprivileged user: ordinary sockets only
  analyze  MANIFEST... -- CAPTURE...
                            prints one line per finding, "|"-separated: "LEAK point|kind (where)|probes",
                            "ALLOWED point|probes", "SENT kind|probes", "THROUGH kind|probes|of sent"

Every probe carries a marker in its payload (or after its ARP message): b"SRLK" + a 6-digit id for
frames that must reach nothing, b"SROK" + id for the allowed flows. A witness that sees a marker
anywhere in a frame counts it, so a probe is caught however it is wrapped (tagged, tunnelled,
quoted inside an ICMP error, trailing an ARP message).
"""

import json
import os
import select
import signal
import socket
import struct
import sys
import time

LEAK = b"SRLK"
ALLOWED = b"SROK"
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


def marker(tag, number):
    return tag + b"%06d" % number


# ---- witness --------------------------------------------------------------------------------------


def interface_mac(name):
    try:
        with open("/sys/class/net/%s/address" % name) as f:
            return f.read().strip()
    except OSError:
        return ""


def find_markers(frame):
    found = set()
    for tag in (LEAK, ALLOWED):
        start = 0
        while True:
            at = frame.find(tag, start)
            if at < 0 or at + 10 > len(frame):
                break
            digits = frame[at + 4:at + 10]
            if digits.isdigit():
                found.add((tag.decode(), int(digits)))
            start = at + 4
    return found


def capture(out_path, ready_path, own_stack_ifaces, exclude_received, stop_file=None):
    packet = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    packet.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    # What this namespace's own IP stack delivers, whatever the protocol: a raw socket gets a copy
    # of every packet of its protocol that reaches local delivery.
    raws = []
    for proto in (socket.IPPROTO_UDP, socket.IPPROTO_TCP, socket.IPPROTO_ICMP, 47, 50, 132, 253):
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, proto)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        raws.append(raw)
    own_macs = {name: interface_mac(name) for name in own_stack_ifaces}
    hits = []           # frames with a marker: [tag, id, iface, outgoing]
    delivered = []      # markers the stack delivered locally: [tag, id]
    own_stack_sent = 0  # frames this namespace's stack sent on an --own-stack interface
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    with open(ready_path, "w") as f:
        f.write("ready\n")
    sockets = [packet] + raws
    while not stop[0] and not (stop_file and os.path.exists(stop_file)):
        try:
            readable, _, _ = select.select(sockets, [], [], 0.2)
        except InterruptedError:
            continue
        for s in readable:
            try:
                data, address = s.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                continue
            if s is packet:
                name, pkttype = address[0], address[2]  # (ifname, protocol, pkttype, hatype, address)
                outgoing = pkttype == PACKET_OUTGOING
                if outgoing and name in own_macs and data[6:12].hex(":") == own_macs[name]:
                    own_stack_sent += 1
                if not outgoing and any(name.startswith(p) for p in exclude_received):
                    continue  # the probe itself, arriving where it was sent
                for tag, number in find_markers(data):
                    hits.append([tag, number, name, outgoing])
            else:
                for tag, number in find_markers(data):
                    delivered.append([tag, number])
    with open(out_path + ".tmp", "w") as f:
        json.dump({"hits": hits, "delivered": delivered, "own_stack_sent": own_stack_sent}, f)
    os.rename(out_path + ".tmp", out_path)


# ---- attacker as root -------------------------------------------------------------------------------


class Manifest:
    def __init__(self):
        self.entries = {}
        self.next = 1

    def add(self, kind, allowed=False):
        number = self.next
        self.next += 1
        self.entries[number] = {"kind": kind, "allowed": allowed}
        return marker(ALLOWED if allowed else LEAK, number)

    def write(self, path_or_file):
        entries = {str(k): v for k, v in self.entries.items()}
        if isinstance(path_or_file, str):
            with open(path_or_file, "w") as f:
                json.dump(entries, f)
        else:
            path_or_file.seek(0)
            path_or_file.truncate()
            json.dump(entries, path_or_file)
            path_or_file.flush()


def attack(plan, manifest_path):
    from scapy.all import (ARP, GRE, ICMP, IP, SCTP, TCP, UDP, Dot1AD, Dot1Q, Ether, IPv6, LLC, Raw,
                           conf, fragment, sendp)
    conf.verb = 0
    iface = plan["interface"]
    me_ip, me_mac = plan["ip"], plan["mac"]
    gateway_ip, gateway_mac = plan["gateway"], plan["gateway_mac"]
    manifest = Manifest()
    frames = []

    # The allowed flows, over real connections of the workload's own stack, first: conntrack then
    # tracks them, and the ICMP errors below relate to one of them.
    allowed = plan["allowed_tcp"]
    connection = socket.create_connection((allowed[0], allowed[1]), timeout=5)
    connection.sendall(manifest.add("allowed tcp", allowed=True))
    connection.recv(64)
    local_port = connection.getsockname()[1]

    l2_paths = {"gateway MAC": gateway_mac, "node's veth MAC": plan["node_veth_mac"],
                "other workload's MAC": plan["other_workload_mac"], "broadcast": "ff:ff:ff:ff:ff:ff",
                "multicast": "01:00:5e:00:00:01", "random unicast": "02:99:88:77:66:55"}
    tags = {"untagged": [], "802.1Q VLAN 0 (priority tag)": [Dot1Q(vlan=0, prio=5)],
            "802.1Q VLAN 5": [Dot1Q(vlan=5)], "802.1ad+802.1Q": [Dot1AD(vlan=5), Dot1Q(vlan=6)]}
    sources = {"own addresses": (me_mac, me_ip), "spoofed IP": (me_mac, plan["spoof_ip"]),
               "spoofed MAC": ("02:53:de:ad:be:ef", me_ip)}

    def l4(proto, mark, dport):
        if proto == "udp":
            return UDP(sport=40000, dport=dport) / Raw(mark)
        if proto == "tcp":
            return TCP(sport=40001, dport=dport, flags="S") / Raw(mark)
        if proto == "icmp echo":
            return ICMP(type=8) / Raw(mark)
        if proto == "gre":
            return GRE() / Raw(mark)
        if proto == "sctp":
            return SCTP(sport=40002, dport=dport) / Raw(mark)
        return Raw(mark)  # carried as IP protocol plan-given (esp 50, 253)

    protocol_numbers = {"udp": 17, "tcp": 6, "icmp echo": 1, "gre": 47, "sctp": 132, "esp": 50, "proto 253": 253}
    for target in plan["targets"]:
        for path, dst_mac in l2_paths.items():
            for tag, headers in tags.items():
                for source, (src_mac, src_ip) in sources.items():
                    for proto, number in protocol_numbers.items():
                        # The allowed tuple itself, in every wrong wrapping, and other ports elsewhere.
                        dport = allowed[1] if target == allowed[0] and proto == "tcp" else 9999
                        kind = "unicast/broadcast IPv4 via %s" % path
                        if tag != "untagged":
                            kind = "tagged: %s" % tag
                        elif source != "own addresses":
                            kind = "spoofed source (%s)" % source
                        # The allowlisted flow itself (a raw SYN with data): it may pass.
                        is_allowed = (target == allowed[0] and proto == "tcp" and tag == "untagged" and
                                      source == "own addresses" and dst_mac == gateway_mac)
                        mark = manifest.add("allowed tcp" if is_allowed else kind, allowed=is_allowed)
                        frame = Ether(src=src_mac, dst=dst_mac)
                        for header in headers:
                            frame = frame / header
                        frame = frame / IP(src=src_ip, dst=target, proto=number) / l4(proto, mark, dport)
                        frames.append(frame)
    # Fragments: an allowed first fragment whose later fragment rewrites the ports (overlap), and
    # fragments of a datagram to a port that is not allowed.
    for dport in (allowed[1], 9999):
        mark = manifest.add("IPv4 fragments")
        datagram = Ether(src=me_mac, dst=gateway_mac) / IP(src=me_ip, dst=allowed[0], id=4242 + dport) / \
            UDP(sport=40003, dport=dport) / Raw(mark * 200)
        frames.extend(fragment(datagram, fragsize=1208))
    # ARP in every shape but the allowed two, and the allowed two with bytes after the message.
    arp_probes = [
        ("ARP request for the gateway, payload after it", "ff:ff:ff:ff:ff:ff",
         ARP(op=1, hwsrc=me_mac, psrc=me_ip, pdst=gateway_ip)),
        ("ARP reply to the gateway, payload after it", gateway_mac,
         ARP(op=2, hwsrc=me_mac, psrc=me_ip, hwdst=gateway_mac, pdst=gateway_ip)),
        ("ARP reply to another MAC", "02:99:88:77:66:55",
         ARP(op=2, hwsrc=me_mac, psrc=me_ip, hwdst="02:99:88:77:66:55", pdst=gateway_ip)),
        ("ARP request for another address", "ff:ff:ff:ff:ff:ff",
         ARP(op=1, hwsrc=me_mac, psrc=me_ip, pdst=plan["targets"][0])),
        ("gratuitous ARP", "ff:ff:ff:ff:ff:ff", ARP(op=1, hwsrc=me_mac, psrc=me_ip, pdst=me_ip)),
        ("ARP with a spoofed sender", "ff:ff:ff:ff:ff:ff",
         ARP(op=1, hwsrc=me_mac, psrc=plan["spoof_ip"], pdst=gateway_ip)),
        ("RARP request (op 3)", "ff:ff:ff:ff:ff:ff", ARP(op=3, hwsrc=me_mac, psrc=me_ip, pdst=gateway_ip)),
        ("ARP request with a nonzero target MAC", "ff:ff:ff:ff:ff:ff",
         ARP(op=1, hwsrc=me_mac, psrc=me_ip, hwdst="02:11:22:33:44:55", pdst=gateway_ip)),
    ]
    for kind, dst, message in arp_probes:
        for tag, headers in tags.items():
            mark = manifest.add("tagged: %s" % tag if tag != "untagged" else kind)
            frame = Ether(src=me_mac, dst=dst)
            for header in headers:
                frame = frame / header
            frames.append(frame / message / Raw(mark + b"\0" * 40))
    # ARP with 16-byte "hardware addresses": the data rides in the address fields.
    mark = manifest.add("ARP with long hardware addresses")
    frames.append(Ether(src=me_mac, dst="ff:ff:ff:ff:ff:ff") / ARP(hwlen=16, op=1, psrc=me_ip, pdst=gateway_ip,
                                                                     hwsrc=mark + b"\0" * 6, hwdst=b"\0" * 16))
    # ICMP errors that conntrack relates to the allowed connection, carrying payload to its server.
    for icmp_type, code in ((3, 3), (3, 4), (11, 0), (12, 0)):
        mark = manifest.add("ICMP error about an allowed connection, with payload")
        quoted = IP(src=allowed[0], dst=me_ip) / TCP(sport=allowed[1], dport=local_port, flags="A") / Raw(mark * 80)
        frames.append(Ether(src=me_mac, dst=gateway_mac) / IP(src=me_ip, dst=allowed[0]) /
                      ICMP(type=icmp_type, code=code) / Raw(bytes(quoted)))
    # IPv6 and other EtherTypes.
    for dst, v6dst in (("33:33:00:00:00:01", "ff02::1"), (gateway_mac, "fe80::1"), ("ff:ff:ff:ff:ff:ff", "2001:db8::1")):
        mark = manifest.add("IPv6")
        frames.append(Ether(src=me_mac, dst=dst) / IPv6(src="fe80::53", dst=v6dst) / UDP(sport=40004, dport=9999) /
                      Raw(mark))
    for ethertype in (0x88B5, 0x88CC, 0x9000, 0x8863, 0x0842):
        mark = manifest.add("other EtherType")
        frames.append(Ether(src=me_mac, dst=gateway_mac, type=ethertype) / Raw(mark * 4))
    mark = manifest.add("other EtherType")
    frames.append(Ether(src=me_mac, dst=gateway_mac) / LLC() / Raw(mark * 4))  # 802.3 length frame

    manifest.write(manifest_path)  # before sending: a crash mid-way still leaves the key
    for chunk in range(0, len(frames), 500):
        sendp(frames[chunk:chunk + 500], iface=iface)
    # The allowed UDP flow too, through the workload's own stack.
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.sendto(manifest.add("allowed udp", allowed=True), tuple(plan["allowed_udp"]))
    manifest.write(manifest_path)
    connection.close()
    print("sent %d frames" % (len(frames) + 1))


# ---- attacker as the job's user ----------------------------------------------------------------------


def user(plan, manifest_path):
    manifest_file = open(manifest_path, "w")  # opened as root: the test's directory is root's alone
    if os.getuid() == 0:
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
    manifest = Manifest()
    manifest.next = plan.get("first_id", 500000)
    kind = plan["kind"]
    for target in plan["targets"]:
        for port in (9999, 53, 123, 443, 6817, 2049):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                s.sendto(manifest.add(kind), (target, port))
            except OSError:
                pass  # unreachable from the workload's own point of view: nothing was sent
            s.close()
            t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            t.setblocking(False)
            try:
                t.connect_ex((target, port))
            except OSError:
                pass
            t.close()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    for target in ("255.255.255.255", plan["subnet_broadcast"]):
        try:
            s.sendto(manifest.add(kind + " (broadcast)"), (target, 9999))
        except OSError:
            pass
    manifest.write(manifest_file)
    print("uid %d sent %d datagrams" % (os.getuid(), len(manifest.entries)))


# ---- analysis ----------------------------------------------------------------------------------------


def analyze(manifest_paths, capture_paths):
    """Counts probes, not frames: a probe seen at three interfaces of a witness, or quoted twice in
    one frame, is one probe that got through there."""
    manifest = {}
    for path in manifest_paths:
        with open(path) as f:
            manifest.update({int(k): v for k, v in json.load(f).items()})
    sent = {}
    for entry in manifest.values():
        sent[entry["kind"]] = sent.get(entry["kind"], 0) + 1
    for kind, count in sorted(sent.items()):
        print("SENT %s|%d" % (kind, count))
    through = {}  # kind -> probe ids that got through anywhere
    for path in capture_paths:
        point = os.path.basename(path).rsplit(".", 1)[0]
        with open(path) as f:
            captured = json.load(f)
        leaks = {}    # "kind (at where)" -> probe ids
        allowed = set()
        seen = [(tag, number, "at " + iface) for tag, number, iface, _ in captured["hits"]]
        seen += [(tag, number, "delivered to the local stack") for tag, number in captured["delivered"]]
        for tag, number, where in seen:
            entry = manifest.get(number, {"kind": "unknown marker", "allowed": False})
            if tag == "SROK" and entry["allowed"]:
                allowed.add(number)
                continue
            leaks.setdefault("%s (%s)" % (entry["kind"], where), set()).add(number)
            through.setdefault(entry["kind"], set()).add(number)
        if captured["own_stack_sent"]:
            leaks["the node's stack answered on a workload port (frames)"] = set(range(captured["own_stack_sent"]))
            through.setdefault("the node's stack answered on a workload port (frames)", set()).update(
                range(captured["own_stack_sent"]))
        for kind, numbers in sorted(leaks.items()):
            print("LEAK %s|%s|%d" % (point, kind, len(numbers)))
        print("ALLOWED %s|%d" % (point, len(allowed)))
    for kind, numbers in sorted(through.items()):
        print("THROUGH %s|%d|%d" % (kind, len(numbers), sent.get(kind, 0)))


def main(argv):
    command = argv[1]
    if command == "capture":
        own, exclude, stop_file = [], [], None
        rest = argv[4:]
        while rest:
            flag, value = rest[0], rest[1]
            if flag == "--stop-file":
                stop_file = value
            else:
                (own if flag == "--own-stack" else exclude).append(value)
            rest = rest[2:]
        capture(argv[2], argv[3], own, exclude, stop_file)
    elif command in ("attack", "user"):
        with open(argv[2]) as f:
            plan = json.load(f)
        (attack if command == "attack" else user)(plan, argv[3])
    elif command == "analyze":
        split = argv.index("--")
        analyze(argv[2:split], argv[split + 1:])
    else:
        sys.exit("unknown command " + command)


if __name__ == "__main__":
    main(sys.argv)
