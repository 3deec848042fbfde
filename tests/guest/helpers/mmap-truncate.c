/*
 * mmap-truncate: a guest helper for the dax_truncate workload. It keeps a DAX
 * file mapped across a truncation done on the host and then touches the old
 * range through the same mapping, as a guest whose size of the file is stale
 * would: its page-table entries still point into the DAX window, so the
 * accesses reach the VMM's mapping of the file.
 *
 *   mmap-truncate FILE LEN KEEP READY WAIT
 *
 * Maps LEN bytes of FILE shared read-write, reads every 4 KiB page (which
 * sets up the DAX mappings and the page-table entries) and keeps a copy of
 * the first KEEP bytes; creates the file READY and waits (up to 120 s) for
 * the file WAIT to appear (the host truncates FILE to KEEP bytes, then
 * creates it); then reads every page of the old range again and writes one
 * byte to each. A guest SIGBUS (the guest noticed the new size) is counted,
 * not fatal. Prints:
 *
 *   head SAME|CHANGED  zero-pages N  data-pages N  sigbus-pages N
 *
 * where zero-pages counts pages wholly past round_up(KEEP, 4 KiB) that read
 * as zeros and data-pages those that did not. Exit status 0 if the head is
 * unchanged and no page past the end showed data, 1 otherwise. If the VMM
 * died instead, nothing is printed at all.
 */
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGE 4096L

static sigjmp_buf on_sigbus;

static void sigbus(int sig)
{
	(void)sig;
	siglongjmp(on_sigbus, 1);
}

static int die(const char *what, const char *file)
{
	fprintf(stderr, "mmap-truncate: %s %s: ", what, file);
	perror(NULL);
	return 1;
}

/* Whether page `p` of the mapping reads as zeros; -1 on SIGBUS. */
static int page_is_zero(volatile unsigned char *p)
{
	if (sigsetjmp(on_sigbus, 1))
		return -1;
	for (long i = 0; i < PAGE; i++)
		if (p[i])
			return 0;
	return 1;
}

/* Writes one byte to page `p`; -1 on SIGBUS. */
static int poke(volatile unsigned char *p)
{
	if (sigsetjmp(on_sigbus, 1))
		return -1;
	p[1] = 0xA5;
	return 0;
}

int main(int argc, char **argv)
{
	if (argc != 6) {
		fprintf(stderr, "usage: mmap-truncate FILE LEN KEEP READY WAIT\n");
		return 1;
	}
	const char *file = argv[1];
	long len = atol(argv[2]), keep = atol(argv[3]);
	if (len <= 0 || len % PAGE || keep < 0 || keep > len) {
		fprintf(stderr, "mmap-truncate: bad LEN %ld or KEEP %ld\n", len, keep);
		return 1;
	}
	int fd = open(file, O_RDWR);
	if (fd < 0)
		return die("open", file);
	volatile unsigned char *map =
		mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED)
		return die("mmap", file);
	unsigned long sum = 0;
	for (long off = 0; off < len; off += PAGE)
		sum += map[off];
	unsigned char *head = malloc(keep ? keep : 1);
	if (!head)
		return die("malloc for", file);
	for (long i = 0; i < keep; i++)
		head[i] = map[i];

	int ready = open(argv[4], O_WRONLY | O_CREAT, 0644);
	if (ready < 0)
		return die("create", argv[4]);
	close(ready);
	int waited = 0;
	while (access(argv[5], F_OK) != 0) {
		if (++waited > 2400) {
			fprintf(stderr, "mmap-truncate: %s did not appear\n", argv[5]);
			return 1;
		}
		usleep(50000);
	}

	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = sigbus;
	sigaction(SIGBUS, &sa, NULL);

	int head_same = 1;
	if (sigsetjmp(on_sigbus, 1))
		head_same = 0;
	else
		for (long i = 0; i < keep && head_same; i++)
			head_same = map[i] == head[i];
	long kept_end = (keep + PAGE - 1) / PAGE * PAGE;
	long zero = 0, data = 0, faults = 0;
	for (long off = kept_end; off < len; off += PAGE) {
		int z = page_is_zero(map + off);
		if (z < 0)
			faults++;
		else if (z)
			zero++;
		else
			data++;
	}
	for (long off = 0; off < len; off += PAGE)
		if (poke(map + off) < 0 && off < kept_end)
			head_same = 0;
	if (msync((void *)map, kept_end ? kept_end : PAGE, MS_SYNC) < 0 && kept_end)
		return die("msync", file);
	printf("head %s zero-pages %ld data-pages %ld sigbus-pages %ld (sum %lu)\n",
	       head_same ? "SAME" : "CHANGED", zero, data, faults, sum);
	return head_same && data == 0 ? 0 : 1;
}
