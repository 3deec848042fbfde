/*
 * mmap-rw: a tiny static helper for the DAX guest workloads (busybox has no
 * way to touch a file through mmap).
 *
 *   mmap-rw cat FILE                 map FILE read-only, write it to stdout
 *   mmap-rw write FILE OFFSET TEXT   map FILE shared read-write, copy TEXT
 *                                    to OFFSET, msync(MS_SYNC), unmap
 *   mmap-rw touch FILE LEN           map LEN bytes of FILE read-write and
 *                                    read then write every 4 KiB page; a
 *                                    page past EOF raises SIGBUS in this
 *                                    process (the VM must survive it)
 *
 * Exit status 0 on success, 1 with a message on stderr otherwise.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static int die(const char *what, const char *file)
{
	fprintf(stderr, "mmap-rw: %s %s: ", what, file);
	perror(NULL);
	return 1;
}

static int do_cat(const char *file)
{
	int fd = open(file, O_RDONLY);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0)
		return die("open", file);
	if (st.st_size == 0)
		return 0;
	char *p = mmap(NULL, st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		return die("mmap", file);
	size_t done = 0;
	while (done < (size_t)st.st_size) {
		ssize_t n = write(1, p + done, st.st_size - done);
		if (n <= 0)
			return die("write stdout for", file);
		done += n;
	}
	munmap(p, st.st_size);
	close(fd);
	return 0;
}

static int do_write(const char *file, long off, const char *text)
{
	int fd = open(file, O_RDWR);
	struct stat st;
	size_t len = strlen(text);
	if (fd < 0 || fstat(fd, &st) < 0)
		return die("open", file);
	if (off < 0 || (size_t)off + len > (size_t)st.st_size) {
		fprintf(stderr, "mmap-rw: %ld+%zu is beyond %s (%lld bytes)\n",
			off, len, file, (long long)st.st_size);
		return 1;
	}
	char *p = mmap(NULL, st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		return die("mmap", file);
	memcpy(p + off, text, len);
	if (msync(p, st.st_size, MS_SYNC) < 0)
		return die("msync", file);
	munmap(p, st.st_size);
	close(fd);
	return 0;
}

static int do_touch(const char *file, long len)
{
	int fd = open(file, O_RDWR);
	if (fd < 0)
		return die("open", file);
	volatile char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		return die("mmap", file);
	unsigned long sum = 0;
	for (long off = 0; off < len; off += 4096) {
		sum += p[off];
		p[off] = (char)sum;
	}
	printf("touched %ld bytes, sum %lu\n", len, sum);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "cat") == 0)
		return do_cat(argv[2]);
	if (argc == 5 && strcmp(argv[1], "write") == 0)
		return do_write(argv[2], atol(argv[3]), argv[4]);
	if (argc == 4 && strcmp(argv[1], "touch") == 0)
		return do_touch(argv[2], atol(argv[3]));
	fprintf(stderr, "usage: mmap-rw cat FILE | write FILE OFFSET TEXT | touch FILE LEN\n");
	return 1;
}
