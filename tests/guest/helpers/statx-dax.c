/*
 * statx-dax: prints 1 if the guest kernel serves FILE through the DAX window
 * (STATX_ATTR_DAX in statx's attributes), 0 if not. For the dax=inode
 * workload: the daemon's --inode-dax policy decides per file, and the guest
 * reports its decision here.
 *
 *   statx-dax FILE
 *
 * Exit status 0 with the answer on stdout; 1 with a message on stderr if
 * statx fails or the kernel does not report the attribute at all.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

#ifndef STATX_ATTR_DAX
#define STATX_ATTR_DAX 0x00200000
#endif

int main(int argc, char **argv)
{
	struct statx st;

	if (argc != 2) {
		fprintf(stderr, "usage: statx-dax FILE\n");
		return 1;
	}
	if (statx(AT_FDCWD, argv[1], 0, STATX_BASIC_STATS, &st) != 0) {
		fprintf(stderr, "statx-dax: statx %s: ", argv[1]);
		perror(NULL);
		return 1;
	}
	if (!(st.stx_attributes_mask & STATX_ATTR_DAX)) {
		fprintf(stderr, "statx-dax: %s: the kernel does not report STATX_ATTR_DAX\n", argv[1]);
		return 1;
	}
	printf("%d\n", (st.stx_attributes & STATX_ATTR_DAX) ? 1 : 0);
	return 0;
}
