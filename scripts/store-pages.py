#!/usr/bin/env python3
"""Which tables and indexes of the state store an engine process read and wrote.

Reads an `strace -f -e trace=pwrite64,pread64,openat -o TRACE` of one engine
process and a copy of its state store taken after it exited, and prints the
4 KiB pages per referral by b-tree: WAL frames written, pages checkpointed
into the database file, and pages read from each file. A WAL frame's page
number is the first field of its 24-byte header, written just before the
page; a database page's number follows from the write's offset.

    python3 scripts/store-pages.py TRACE STATE_DB REFERRALS

Take the trace with `cosell-sync bench --engine WRAPPER`, where WRAPPER runs
the first phase (the backfill) under strace and copies
`$COSELL_SYNC__STATE__PATH` when it ends (BENCHMARKS.md, twelfth stop).
Needs an SQLite built with the `dbstat` table (Python's usually is).
"""

import collections
import re
import sqlite3
import sys

PAGE = 4096
FRAME_HEADER = 24
WAL_HEADER = 32
OPEN = re.compile(r'^\d+\s+openat\(AT_FDCWD, "([^"]+)".*\) = (\d+)')
WRITE = re.compile(r'^\d+\s+pwrite64\((\d+), "(.*)"(?:\.\.\.)?, (\d+), (\d+)\) = ')
READ = re.compile(r'^\d+\s+pread64\((\d+), .*, (\d+), (\d+)\) = ')
ESCAPES = {"n": 10, "t": 9, "r": 13, "v": 11, "f": 12, "\\": 92, '"': 34}


def unescape(s):
    """The bytes of a string as strace prints it (octal, hex and C escapes)."""
    out, i = bytearray(), 0
    while i < len(s):
        if s[i] != "\\":
            out.append(ord(s[i]))
            i += 1
            continue
        d = s[i + 1]
        if d in "01234567":
            j = i + 1
            while j < len(s) and j < i + 4 and s[j] in "01234567":
                j += 1
            out.append(int(s[i + 1 : j], 8))
            i = j
        elif d == "x":
            out.append(int(s[i + 2 : i + 4], 16))
            i += 4
        else:
            out.append(ESCAPES.get(d, ord(d)))
            i += 2
    return bytes(out)


def main(trace, state_db, referrals):
    name = "/" + state_db.rsplit("/", 1)[-1]
    files = {}
    frame_page = {}
    count = {k: collections.Counter() for k in ("wal", "ckpt", "read db", "read wal")}
    with open(trace) as lines:
        for line in lines:
            if m := OPEN.match(line):
                files[m.group(2)] = m.group(1)
            elif m := WRITE.match(line):
                path, size, off = files.get(m.group(1), ""), int(m.group(3)), int(m.group(4))
                if path.endswith(name + "-wal") and size == FRAME_HEADER:
                    page = int.from_bytes(unescape(m.group(2))[:4], "big")
                    frame_page[(off - WAL_HEADER) // (PAGE + FRAME_HEADER)] = page
                    count["wal"][page] += 1
                elif path.endswith(name) and size == PAGE:
                    count["ckpt"][off // PAGE + 1] += 1
            elif m := READ.match(line):
                path, size, off = files.get(m.group(1), ""), int(m.group(2)), int(m.group(3))
                if size != PAGE:
                    continue
                if path.endswith(name + "-wal"):
                    frame = (off - WAL_HEADER - FRAME_HEADER) // (PAGE + FRAME_HEADER)
                    count["read wal"][frame_page.get(frame, 0)] += 1
                elif path.endswith(name):
                    count["read db"][off // PAGE + 1] += 1
    db = sqlite3.connect(f"file:{state_db}?mode=ro", uri=True)
    owner = dict((page, name) for name, page in db.execute("SELECT name, pageno FROM dbstat"))
    by_tree = {k: collections.Counter() for k in count}
    for kind, pages in count.items():
        for page, n in pages.items():
            by_tree[kind][owner.get(page, "?")] += n
    kinds = list(count)
    print(f"pages per referral ({referrals} referrals)")
    print(f"{'b-tree':34}" + "".join(f"{k:>10}" for k in kinds))
    print(f"{'all':34}" + "".join(f"{sum(count[k].values()) / referrals:10.3f}" for k in kinds))
    trees = set().union(*by_tree.values())
    for tree in sorted(trees, key=lambda t: -sum(by_tree[k][t] for k in kinds)):
        if sum(by_tree[k][tree] for k in kinds) >= referrals / 100:
            print(f"{tree:34}" + "".join(f"{by_tree[k][tree] / referrals:10.3f}" for k in kinds))


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
