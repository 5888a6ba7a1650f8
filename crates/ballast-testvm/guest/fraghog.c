/*
 * fraghog: the ballast lab guest's fragmenter (built with gcc -static into the guest
 * initramfs as /bin/fraghog). It tries to make a higher-order kernel allocation fail
 * while free memory sits in single pages:
 *
 * usage: fraghog LEAVE_MIB PIPE_MIB
 *   1. mlockall, then maps and touches anonymous memory in 4 MiB steps until MemFree
 *      is under LEAVE_MIB (with vm.compact_unevictable_allowed=0 compaction cannot
 *      move it);
 *   2. fills PIPE_MIB (or down to 12 MiB free) with pipes holding one page each
 *      (unmovable kernel pages, taken one after the other), keeping the read ends;
 *   3. closes every other pipe: the freed pages sit between pinned ones, so their
 *      buddies never merge;
 *   4. asks for 1 MiB pipes (F_SETPIPE_SZ: a 10 KiB ring, an order-2 kmalloc that
 *      may call the OOM killer), keeping each, until 60 have failed (one a second).
 * It prints "fraghog: ..." lines at every stage.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

static long mem_free_mib(void)
{
    char line[256];
    long kib = -1;
    FILE *f = fopen("/proc/meminfo", "r");

    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemFree: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib < 0 ? -1 : kib / 1024;
}

int main(int argc, char **argv)
{
    long leave_mib = argc > 1 ? atol(argv[1]) : 96;
    long pipe_mib = argc > 2 ? atol(argv[2]) : 64;
    long npipes = pipe_mib * 256;
    long anon_mib = 0, made = 0, failed, i;
    static char page[4096];
    int *fds;
    struct rlimit files = { npipes + 64, npipes + 64 };

    setvbuf(stdout, NULL, _IOLBF, 0);
    if (setrlimit(RLIMIT_NOFILE, &files) != 0)
        perror("fraghog: setrlimit");
    if (mlockall(MCL_CURRENT | MCL_FUTURE) != 0)
        perror("fraghog: mlockall");
    while (mem_free_mib() > leave_mib) {
        char *p = mmap(NULL, 4 << 20, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
        if (p == MAP_FAILED) {
            perror("fraghog: mmap");
            break;
        }
        memset(p, 1, 4 << 20);
        anon_mib += 4;
    }
    printf("fraghog: anon %ld MiB locked, MemFree %ld MiB\n", anon_mib, mem_free_mib());
    fds = calloc(npipes, sizeof *fds);
    if (!fds)
        return 1;
    memset(page, 'f', sizeof page);
    for (i = 0; i < npipes && (i % 256 || mem_free_mib() > 12); i++) {
        int p[2];

        if (pipe(p) != 0) {
            perror("fraghog: pipe");
            break;
        }
        if (write(p[1], page, sizeof page) != (ssize_t)sizeof page) {
            perror("fraghog: write");
            close(p[0]);
            close(p[1]);
            break;
        }
        close(p[1]);
        fds[made++] = p[0];
    }
    printf("fraghog: %ld one-page pipes, MemFree %ld MiB\n", made, mem_free_mib());
    for (i = 0; i < made; i += 2)
        close(fds[i]);
    printf("fraghog: closed every other pipe, MemFree %ld MiB\n", mem_free_mib());
    for (i = 0, failed = 0; failed < 60; i++) {
        int p[2];

        if (pipe(p) != 0) {
            perror("fraghog: pipe");
        } else if (fcntl(p[1], F_SETPIPE_SZ, 1 << 20) < 0) {
            perror("fraghog: F_SETPIPE_SZ");
        } else {
            if (i % 64 == 0)
                printf("fraghog: %ld 1 MiB pipes, MemFree %ld MiB\n", i + 1, mem_free_mib());
            continue; /* kept: the next one needs another ring */
        }
        failed++;
        sleep(1);
    }
    printf("fraghog: %ld 1 MiB pipes tried, %ld failed without a kill\n", i, failed);
    for (;;)
        pause();
}
