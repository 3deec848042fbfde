#!/usr/bin/python3
"""A slow filesystem: a passthrough FUSE mount of a directory whose reads
take --read-delay-ms milliseconds each (as a network filesystem's might).
Everything else passes straight through. For the thread-pool benchmark
(benches/slowfs/run.sh); multithreaded, so concurrent reads wait
concurrently, as they would on a real slow filesystem.

    slowfs.py ROOT MOUNTPOINT [--read-delay-ms N]
"""

import argparse
import errno
import os
import time

import fusepy


class SlowPassthrough(fusepy.Operations):
    def __init__(self, root, read_delay):
        self.root = os.path.realpath(root)
        self.read_delay = read_delay

    def _full(self, path):
        return os.path.join(self.root, path.lstrip("/"))

    def access(self, path, mode):
        if not os.access(self._full(path), mode):
            raise fusepy.FuseOSError(errno.EACCES)

    def getattr(self, path, fh=None):
        st = os.lstat(self._full(path))
        keys = ("st_atime", "st_ctime", "st_gid", "st_mode", "st_mtime",
                "st_nlink", "st_size", "st_uid", "st_ino")
        return {key: getattr(st, key) for key in keys}

    def readdir(self, path, fh):
        return [".", ".."] + os.listdir(self._full(path))

    def statfs(self, path):
        st = os.statvfs(self._full(path))
        keys = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail",
                "f_ffree", "f_files", "f_flag", "f_frsize", "f_namemax")
        return {key: getattr(st, key) for key in keys}

    def mkdir(self, path, mode):
        os.mkdir(self._full(path), mode)

    def rmdir(self, path):
        os.rmdir(self._full(path))

    def unlink(self, path):
        os.unlink(self._full(path))

    def rename(self, old, new):
        os.rename(self._full(old), self._full(new))

    def chmod(self, path, mode):
        os.chmod(self._full(path), mode)

    def chown(self, path, uid, gid):
        os.lchown(self._full(path), uid, gid)

    def utimens(self, path, times=None):
        os.utime(self._full(path), times)

    def truncate(self, path, length, fh=None):
        os.truncate(self._full(path), length)

    def open(self, path, flags):
        return os.open(self._full(path), flags)

    def create(self, path, mode, fi=None):
        return os.open(self._full(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)

    def read(self, path, size, offset, fh):
        time.sleep(self.read_delay)
        return os.pread(fh, size, offset)

    def write(self, path, data, offset, fh):
        return os.pwrite(fh, data, offset)

    def flush(self, path, fh):
        return 0

    def fsync(self, path, datasync, fh):
        os.fsync(fh)

    def release(self, path, fh):
        os.close(fh)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root")
    parser.add_argument("mountpoint")
    parser.add_argument("--read-delay-ms", type=float, default=2.0)
    args = parser.parse_args()
    fusepy.FUSE(SlowPassthrough(args.root, args.read_delay_ms / 1000.0),
                args.mountpoint, foreground=True, nothreads=False,
                allow_other=True, direct_io=True)


if __name__ == "__main__":
    main()
