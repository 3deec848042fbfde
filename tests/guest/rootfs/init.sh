#!/bin/sh
# /daxfsd-init of the Debian root-filesystem guest (tests/guest/run-rootfs.sh):
# the kernel boots straight into it from the virtio-fs root (no initramfs).
# Runs real programs in phases, each checked, prints one marker per phase and
# powers off:
#   DAXFSD-STEP PASS|FAIL <phase>     DAXFSD-VALUE phase.<phase> <seconds>
#   DAXFSD-RESULT PASS | DAXFSD-RESULT FAIL <phase>
# Kernel command line: daxfsd.phases=LIST (comma separated; default all),
# daxfsd.rounds=N (the whole list N times), daxfsd.soak=SECONDS (repeat the
# list until SECONDS of uptime have passed; every round fully checked).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/shm /dev/pts /run
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
exec </dev/console >/dev/console 2>&1

W=/work
PHASES=compileall,make,git,randio,window_io,rmrf
ROUNDS=1
SOAK=0
for word in $(cat /proc/cmdline); do
  case $word in
    daxfsd.phases=*) PHASES=${word#*=} ;;
    daxfsd.rounds=*) ROUNDS=${word#*=} ;;
    daxfsd.soak=*) SOAK=${word#*=} ;;
  esac
done
echo "DAXFSD-INFO kernel $(uname -r) root=$(grep ' / ' /proc/mounts | head -n 1)"

finish() {
  echo "DAXFSD-RESULT $*"
  sync
  echo o >/proc/sysrq-trigger
  sleep 30
}

now() { cut -d' ' -f1 /proc/uptime; }

# phase NAME: runs phase_NAME in a subshell (set -e), traced into a file
# whose tail is printed on failure.
phase() {
  t0=$(now)
  ( set -ex; "phase_$1" ) >/tmp/phase.out 2>/tmp/phase.trace
  rc=$?
  t1=$(now)
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  if [ "$rc" -eq 0 ]; then
    echo "DAXFSD-STEP PASS $1 (${secs}s)"
    echo "DAXFSD-VALUE phase.$1 $secs"
  else
    echo "--- output of phase $1 ---"; tail -n 15 /tmp/phase.out
    echo "--- last commands of phase $1 ---"; tail -n 15 /tmp/phase.trace
    echo "DAXFSD-STEP FAIL $1: exit $rc"
    finish FAIL "$1"
  fi
}

phase_compileall() {
  python3 -m compileall -q -f -j 2 /usr/lib/python3.11 >/dev/null
  python3 -c 'import json, email.mime.text, http.client, unittest, xml.dom.minidom, sqlite3, decimal; print(json.dumps({"ok": str(decimal.Decimal(1) / 7)}))' | grep -q '"ok": "0.142857'
}

phase_make() {
  cd $W/cproj
  make -s clean
  make -s -j4
  ./app >out.1
  cmp out.1 want
  make -s clean
  make -s -j4
  ./app >out.2
  cmp out.2 want
}

phase_git() {
  rm -rf $W/repo
  cp -a /usr/share/doc $W/repo
  cd $W/repo
  git init -q
  git config user.email test@daxfsd.invalid
  git config user.name "daxfsd test"
  git add -A
  git commit -q -m "docs"
  git fsck --full --strict
  test -z "$(git status --porcelain)"
  # Every file reads back as git stored it (one git process for all of
  # them: regular files only, symlinks are stored as their target's name).
  git -c core.quotepath=off ls-files -s |
    awk -F '\t' '{ split($1, m, " "); if (m[1] != "120000") print m[2] "\t" $2 }' >/tmp/index
  cut -f2 /tmp/index | git hash-object --stdin-paths >/tmp/hashed
  cut -f1 /tmp/index | cmp - /tmp/hashed
  test -s /tmp/hashed
  git rev-parse HEAD >$W/repo.head
  git ls-files | wc -l >$W/repo.files
}

# Verified random writes, then random reads through mmap, of a file 1.5 times
# the 32 MiB window: every 16 KiB block carries a header (index, round) and a
# crc32 that is checked when it is read back. (What fio --verify does, in the
# python3 already loaded for compileall: Debian's fio links tens of MB of
# libraries that a 32 MiB window must page in before its first I/O.)
phase_randio() {
  python3 - <<'PY'
import mmap, os, random, struct, zlib
W, BS, SIZE = "/work", 16384, 48 << 20
blocks = SIZE // BS
def block(i, rnd):
    rng = random.Random(i * 7919 + rnd)
    body = rng.randbytes(BS - 16)
    return struct.pack("<QII", i, rnd, zlib.crc32(body)) + body
def check(buf, i, rnd, how):
    idx, r, crc = struct.unpack_from("<QII", buf)
    assert (idx, r) == (i, rnd), f"{how}: block {i}: header says block {idx} round {r}"
    assert zlib.crc32(buf[16:BS]) == crc, f"{how}: block {i}: crc mismatch"
fd = os.open(f"{W}/randio.dat", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
os.ftruncate(fd, SIZE)
order = list(range(blocks))
random.Random(7).shuffle(order)
for i in order:
    os.pwrite(fd, block(i, 1), i * BS)
# Rewrite a random quarter in place (DAX writes into mapped ranges).
again = set(random.Random(8).sample(range(blocks), blocks // 4))
for i in again:
    os.pwrite(fd, block(i, 2), i * BS)
os.fsync(fd)
random.Random(9).shuffle(order)
for i in order:
    check(os.pread(fd, BS, i * BS), i, 2 if i in again else 1, "read")
m = mmap.mmap(fd, SIZE, prot=mmap.PROT_READ)
random.Random(10).shuffle(order)
for i in order:
    check(m[i * BS:(i + 1) * BS], i, 2 if i in again else 1, "mmap")
m.close()
os.close(fd)
print("randio ok", blocks)
PY
  md5sum $W/randio.dat | cut -d' ' -f1 >$W/randio.md5
}

# The same with fio (not in the default list: under TCG, Debian's fio needs a
# window larger than its shared libraries to start in reasonable time).
phase_fio() {
  # Verified random writes, then random reads through mmap of a file twice
  # the window (every block checked against its crc32c header).
  fio --name=vw --filename=$W/fio.dat --size=64M --bs=4k --rw=randwrite \
    --ioengine=psync --verify=crc32c --do_verify=1 --randseed=7 --output=/tmp/fio.1
  fio --name=vw --filename=$W/fio.dat --size=64M --bs=4k --rw=randwrite \
    --ioengine=mmap --verify=crc32c --verify_only --randseed=7 --output=/tmp/fio.2
  md5sum $W/fio.dat | cut -d' ' -f1 >$W/fio.md5
}

# I/O whose buffer is an mmap of another file on this filesystem: with DAX its
# pages are window pages (git writes its config this way).
phase_window_io() {
  head -c 3000000 /dev/urandom >$W/src.bin
  sync
  echo 3 >/proc/sys/vm/drop_caches
  python3 - <<'PY'
import mmap, os, hashlib
W = "/work"
with open(f"{W}/src.bin", "rb") as f:
    m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
    want = hashlib.md5(m[:]).hexdigest()
    # write(2) from the mapping: a new file, so the write extends it and
    # bypasses DAX: its data descriptors point into the window.
    fd = os.open(f"{W}/dst.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    view = memoryview(m)
    off = 0
    while off < len(m):
        off += os.write(fd, view[off:off + 1048576])
    os.close(fd)
    view.release()
# read(2) into a writable shared mapping of another file: with DAX the
# destination pages are window pages.
size = os.path.getsize(f"{W}/src.bin")
with open(f"{W}/rdst.bin", "wb") as g:
    g.truncate(size)
with open(f"{W}/rdst.bin", "r+b") as g:
    dst = mmap.mmap(g.fileno(), size)
    fd = os.open(f"{W}/src.bin", os.O_RDONLY)
    view = memoryview(dst)
    off = 0
    while off < size:
        n = os.readv(fd, [view[off:off + 1048576]])
        if n <= 0:
            break
        off += n
    os.close(fd)
    view.release()
    dst.flush()
    dst.close()
# read(2) with O_DIRECT of a small file (below --inode-dax min-size=64K: not
# DAX under dax=inode) into a shared mapping of a DAX file: the FUSE READ's
# reply buffers are window pages. (Under dax=always every file is DAX and
# the read is the guest's own copy.)
small = os.urandom(40960)
with open(f"{W}/small.bin", "wb") as f:
    f.write(small)
with open(f"{W}/rdst2.bin", "wb") as g:
    g.truncate(1 << 20)
# Under dax=inode a file is instantiated with the DAX flag its size had then
# (0 when created): let the guest forget both so they come back as what they
# are now (rdst2.bin and src.bin DAX, small.bin not).
os.system("sync; echo 3 > /proc/sys/vm/drop_caches")
# write(2) with O_DIRECT from a mapping of src.bin (DAX) into a small new
# file: the FUSE WRITE's data are window pages under either mode.
with open(f"{W}/src.bin", "rb") as f:
    m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
    fd = os.open(f"{W}/wdirect.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o644)
    view = memoryview(m)
    put = os.writev(fd, [view[4096:4096 + 40960]])
    os.close(fd)
    assert put == 40960, f"O_DIRECT write returned {put}"
    want_direct = m[4096:4096 + 40960]
    view.release()
with open(f"{W}/wdirect.bin", "rb") as f:
    assert f.read() == want_direct, "O_DIRECT write from the window: wrong bytes"
with open(f"{W}/rdst2.bin", "r+b") as g:
    dst = mmap.mmap(g.fileno(), 1 << 20)
    fd = os.open(f"{W}/small.bin", os.O_RDONLY | os.O_DIRECT)
    view = memoryview(dst)
    got = os.readv(fd, [view[8192:8192 + len(small)]])
    os.close(fd)
    assert got == len(small), f"O_DIRECT read returned {got}"
    assert dst[8192:8192 + len(small)] == small, "O_DIRECT read into the window: wrong bytes"
    view.release()
    dst.flush()
    dst.close()
with open(f"{W}/rdst2.bin", "rb") as g:
    data = g.read()
assert data[8192:8192 + len(small)] == small and data[:8192] == bytes(8192), "rdst2.bin"
for name in ("dst.bin", "rdst.bin"):
    with open(f"{W}/{name}", "rb") as f:
        got = hashlib.md5(f.read()).hexdigest()
    assert got == want, f"{name}: md5 {got}, expected {want}"
print("window-io ok", want)
PY
  md5sum $W/src.bin | cut -d' ' -f1 >$W/src.md5
  md5sum $W/small.bin | cut -d' ' -f1 >$W/small.md5
  dd if=$W/src.bin bs=4096 skip=1 count=10 status=none | md5sum | cut -d' ' -f1 >$W/wdirect.md5
}

phase_rmrf() {
  rm -rf $W/repo $W/cproj/*.o
  test ! -e $W/repo
  ls $W/cproj/*.o 2>/dev/null && exit 1
  true
}

r=1
while [ "$r" -le "$ROUNDS" ] || [ "$(now | cut -d. -f1)" -lt "$SOAK" ]; do
  for p in $(echo "$PHASES" | tr ',' ' '); do phase "$p"; done
  echo "DAXFSD-INFO round $r done"
  echo "DAXFSD-VALUE rounds $r"
  r=$((r + 1))
done
finish PASS
