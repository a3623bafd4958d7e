#!/bin/sh
# Rebuilds the committed seed corpora of the fuzz targets (fuzz/corpus/<target>/):
#   verify_reader:  the fixture releases 1.0.0 and 4.0.0 built with fuzz/keys/fuzz.key (the key the
#                   target trusts), and variants crafted from 4.0.0 that keep its signed head but
#                   change the payload (symlink, hard link, device, fifo, PAX, GNU long name,
#                   duplicate, unlisted, truncated, trailing data, flipped bytes, plain tar, …);
#   manifest_parse: the manifests of both releases, and a few malformed ones.
# Needs python3 and the `bundle-build` binary (`cargo build` first; BUNDLE_BUILD=path to override).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
bb=${BUNDLE_BUILD:-${CARGO_TARGET_DIR:-$root/target}/debug/bundle-build}
[ -x "$bb" ] || { echo "no bundle-build at $bb: run cargo build (or set BUNDLE_BUILD)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 "$root/fixtures/build.py" "$work/specs" >/dev/null
for v in 1.0.0 4.0.0; do
    SOURCE_DATE_EPOCH=1700000000 "$bb" build "$work/specs/$v/spec.yaml" --key "$here/keys/fuzz.key" --out "$work/out" >/dev/null 2>&1
done
vr="$here/corpus/verify_reader"
mp="$here/corpus/manifest_parse"
rm -rf "$vr" "$mp"
mkdir -p "$vr" "$mp"
cp "$work/out/fieldlog-1.0.0.bundle.tar.gz" "$vr/real-1.0.0.bundle.tar.gz"
cp "$work/out/fieldlog-4.0.0.bundle.tar.gz" "$vr/real-4.0.0.bundle.tar.gz"
python3 - "$work/out/fieldlog-4.0.0.bundle.tar.gz" "$vr" "$mp" "$work/out/fieldlog-1.0.0.bundle.tar.gz" <<'PY'
import gzip, io, os, sys, tarfile
src, vr, mp, v1 = sys.argv[1:5]
raw = open(src, "rb").read()
plain = gzip.decompress(raw)
members = []
with tarfile.open(fileobj=io.BytesIO(plain)) as t:
    for m in t.getmembers():
        members.append((m, t.extractfile(m).read() if m.isfile() else b""))
head, payload = members[:2], members[2:]

def build(items, fmt=tarfile.USTAR_FORMAT, level=6):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for info, data in items:
            t.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return gzip.compress(buf.getvalue(), compresslevel=level, mtime=0)

def info(name, kind=tarfile.REGTYPE, size=0, mode=0o644, link=""):
    i = tarfile.TarInfo(name)
    i.type, i.size, i.mode, i.linkname, i.mtime = kind, size, mode, link, 0
    i.uname = i.gname = "root"
    return i

def put(name, data):
    open(os.path.join(vr, name), "wb").write(data)

first = payload[0][0].name
put("crafted-symlink-then-file.tgz", build(head + [(info("hooks", tarfile.SYMTYPE, link="/tmp"), b"")] + payload))
put("crafted-hardlink.tgz", build(head + [(info(first, tarfile.LNKTYPE, link="/etc/shadow"), b"")] + payload[1:]))
put("crafted-chardev.tgz", build(head + [(info("dev", tarfile.CHRTYPE), b"")] + payload))
put("crafted-fifo.tgz", build(head + [(info("fifo", tarfile.FIFOTYPE), b"")] + payload))
put("crafted-dotdot.tgz", build(head + [(info("../escape", size=4), b"pwn\n")] + payload))
put("crafted-absolute.tgz", build(head + [(info("/tmp/escape", size=4), b"pwn\n")] + payload))
put("crafted-duplicate.tgz", build(head + payload + [payload[0]]))
put("crafted-unlisted.tgz", build(head + payload + [(info("extra.txt", size=4), b"pwn\n")]))
put("crafted-missing.tgz", build(head + payload[1:]))
put("crafted-setuid.tgz", build(head + [(info(payload[0][0].name, size=len(payload[0][1]), mode=0o4755), payload[0][1])] + payload[1:]))
long = "d/" * 60 + "long.txt"
put("crafted-gnu-longname.tgz", build(head + [(info(long, size=4), b"pwn\n")] + payload, fmt=tarfile.GNU_FORMAT))
pax = info("x.txt", size=4)
pax.pax_headers = {"path": "../pax-escape", "SCHILY.xattr.security.capability": "\x01\x00\x00\x02"}
put("crafted-pax.tgz", build(head + [(pax, b"pwn\n")] + payload, fmt=tarfile.PAX_FORMAT))
put("crafted-stored.tgz", build(head + payload, level=0))
put("crafted-trailing-garbage.tgz", raw + b"garbage")
put("crafted-second-member.tgz", raw + gzip.compress(b"\0" * 1024, mtime=0))
put("crafted-truncated-half.tgz", raw[: len(raw) // 2])
put("crafted-truncated-trailer.tgz", raw[:-4])
flip = bytearray(raw); flip[len(raw) // 3] ^= 0x10
put("crafted-bitflip.tgz", bytes(flip))
crc = bytearray(raw); crc[-8] ^= 1
put("crafted-bad-crc.tgz", bytes(crc))
put("crafted-plain-tar.tar", plain)
put("crafted-no-end-of-archive.tgz", gzip.compress(plain[: len(plain) - 1024].rstrip(b"\0") + b"\0" * 0, mtime=0))
put("crafted-empty.tgz", gzip.compress(b"", mtime=0))
for name, path in (("manifest-4.0.0.yaml", src), ("manifest-1.0.0.yaml", v1)):
    with tarfile.open(path) as t:
        open(os.path.join(mp, name), "wb").write(t.extractfile("manifest.yaml").read())
m = open(os.path.join(mp, "manifest-4.0.0.yaml"), "rb").read()
open(os.path.join(mp, "bad-format-2.yaml"), "wb").write(m.replace(b"format: 1", b"format: 2", 1))
open(os.path.join(mp, "bad-traversal.yaml"), "wb").write(m.replace(b"path: config/defaults.yaml", b"path: ../../etc/passwd", 1))
open(os.path.join(mp, "bad-anchors.yaml"), "wb").write(b"a: &a [x, x, x]\nb: &b [*a, *a, *a]\nc: &c [*b, *b, *b]\nformat: 1\n")
open(os.path.join(mp, "bad-truncated.yaml"), "wb").write(m[: len(m) // 2])
PY
ls "$vr" "$mp" | wc -l
