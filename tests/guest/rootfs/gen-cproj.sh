#!/usr/bin/env bash
# Writes the C project the root-filesystem guest builds with `make -j4`
# (MODULES translation units plus main.c, a header, a Makefile) into DIR,
# builds it once on the host and stores the program's output as DIR/want.
#   gen-cproj.sh DIR [MODULES]      (default 48)
set -euo pipefail
dir=$1
modules=${2:-48}
mkdir -p "$dir"
{
  echo '#include <stddef.h>'
  for i in $(seq 0 $((modules - 1))); do echo "unsigned long mod$i(unsigned long seed);"; done
} >"$dir/mods.h"
for i in $(seq 0 $((modules - 1))); do
  cat >"$dir/mod$i.c" <<C
#include <string.h>
#include <stdio.h>
#include "mods.h"
/* Module $i: a little table work, string formatting and a hash. */
static unsigned long table$i[256];
static void fill$i(unsigned long seed) {
  for (size_t k = 0; k < 256; k++) table$i[k] = (seed ^ (k * $((i * 2654435761 % 1000003 + 17))ul)) * 6364136223846793005ul;
}
unsigned long mod$i(unsigned long seed) {
  char buf[128];
  unsigned long h = 1469598103934665603ul + $i;
  fill$i(seed + $i);
  for (size_t k = 0; k < 256; k++) {
    int n = snprintf(buf, sizeof buf, "%lu:%zu:%d", table$i[k], k, $i);
    for (int j = 0; j < n; j++) h = (h ^ (unsigned char)buf[j]) * 1099511628211ul;
  }
  if (strlen(buf) == 0) h++;
  return h;
}
C
done
{
  echo '#include <stdio.h>'
  echo '#include "mods.h"'
  echo 'int main(void) {'
  echo '  unsigned long h = 0;'
  for i in $(seq 0 $((modules - 1))); do
    echo "  h ^= mod$i(h + $i); printf(\"mod$i %016lx\\n\", h);"
  done
  echo '  return 0;'
  echo '}'
} >"$dir/main.c"
cat >"$dir/Makefile" <<'MK'
SRCS := $(wildcard mod*.c) main.c
OBJS := $(SRCS:.c=.o)
CFLAGS := -O2 -Wall -Werror
app: $(OBJS)
	$(CC) -o $@ $(OBJS)
%.o: %.c mods.h
	$(CC) $(CFLAGS) -c -o $@ $<
clean:
	rm -f $(OBJS) app
.PHONY: clean
MK
(cd "$dir" && make -s -j"$(nproc)" >/dev/null && ./app >want && make -s clean)
