/*
 * pread-bench: reads a file front to back with pread(2) in fixed-size
 * blocks (a psync read, like fio's psync engine with one job) and reports
 * the time it took, for the guest benchmarks.
 *
 *   pread-bench FILE BLOCK_SIZE
 *
 * Prints "pread-bench bytes=N ns=T MBps=R" on success.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: pread-bench FILE BLOCK_SIZE\n");
		return 1;
	}
	long bs = atol(argv[2]);
	if (bs <= 0 || bs > (1 << 24)) {
		fprintf(stderr, "pread-bench: bad block size %s\n", argv[2]);
		return 1;
	}
	int fd = open(argv[1], O_RDONLY);
	if (fd < 0) {
		perror(argv[1]);
		return 1;
	}
	char *buf = malloc(bs);
	if (!buf)
		return 1;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	long long off = 0;
	unsigned long sum = 0;
	for (;;) {
		ssize_t n = pread(fd, buf, bs, off);
		if (n < 0) {
			perror("pread");
			return 1;
		}
		if (n == 0)
			break;
		sum += (unsigned char)buf[0];
		off += n;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	long long ns = (t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec);
	printf("pread-bench bytes=%lld ns=%lld MBps=%.1f sum=%lu\n", off, ns,
	       ns ? (double)off / (1 << 20) / ((double)ns / 1e9) : 0.0, sum);
	return 0;
}
