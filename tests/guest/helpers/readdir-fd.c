/*
 * readdir-fd: lists the directory that is already open as descriptor FD,
 * one name a line ("." and ".." left out), after rewinding it. It reads
 * through that open directory handle (FUSE READDIR on the handle the guest
 * got at OPENDIR) instead of opening the path again: the migration workload
 * checks that a handle opened on the source still reads on the destination.
 *
 *   readdir-fd FD
 *
 * Exit status 0 with the names on stdout; 1 with a message on stderr.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	DIR *dir;
	struct dirent *e;
	int fd;

	if (argc != 2) {
		fprintf(stderr, "usage: readdir-fd FD\n");
		return 1;
	}
	fd = atoi(argv[1]);
	if (lseek(fd, 0, SEEK_SET) < 0) {
		fprintf(stderr, "readdir-fd: lseek %d: %s\n", fd, strerror(errno));
		return 1;
	}
	dir = fdopendir(fd);
	if (!dir) {
		fprintf(stderr, "readdir-fd: fdopendir %d: %s\n", fd, strerror(errno));
		return 1;
	}
	for (;;) {
		errno = 0;
		e = readdir(dir);
		if (!e)
			break;
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			printf("%s\n", e->d_name);
	}
	if (errno) {
		fprintf(stderr, "readdir-fd: readdir %d: %s\n", fd, strerror(errno));
		return 1;
	}
	return 0;
}
