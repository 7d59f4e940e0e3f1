"""Helpers shared by the benchmarks (loopback only)."""
import os
import socket
import struct


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def envelope(job_id, data, attempt=0):
    """A curlyq job envelope as vmihailenco/msgpack v4 writes it: fixmap(3)
    ID str8, Data bin8/bin16, Attempt int64 (d3)."""
    jid = job_id.encode()
    body = b"\xc4" + bytes([len(data)]) if len(data) < 256 else b"\xc5" + struct.pack(">H", len(data))
    return (b"\x83\xa2ID\xd9" + bytes([len(jid)]) + jid + b"\xa4Data" + body + data +
            b"\xa7Attempt\xd3" + struct.pack(">q", attempt))


def children(pid):
    """Live children of pid, from /proc."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    st = f.read()
                if int(st[st.rindex(")") + 2:].split()[1]) == pid:
                    out.append(int(d))
            except (OSError, ValueError):
                pass
    return out
