/*
 * memhog: the ballast lab guest's memory hog (built with gcc -static into the
 * guest initramfs as /bin/memhog).
 *
 * usage: memhog [STEP_MIB [DELAY_MS [HOLD_MIB]]]
 *   Maps and touches STEP_MIB MiB of anonymous memory every DELAY_MS ms and
 *   prints "memhog: <total> MiB" after each step. With HOLD_MIB > 0 it stops
 *   growing once it holds HOLD_MIB MiB, prints "memhog: holding <total> MiB"
 *   and sleeps forever (the memory stays touched). Without it, it grows until
 *   the guest kernel's OOM killer stops it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    long step_mib = argc > 1 ? atol(argv[1]) : 16;
    long delay_ms = argc > 2 ? atol(argv[2]) : 100;
    long hold_mib = argc > 3 ? atol(argv[3]) : 0;
    long total_mib = 0;

    if (step_mib <= 0)
        step_mib = 16;
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (;;) {
        if (hold_mib > 0 && total_mib >= hold_mib) {
            printf("memhog: holding %ld MiB\n", total_mib);
            for (;;)
                pause();
        }
        size_t len = (size_t)step_mib << 20;
        char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) {
            perror("memhog: mmap");
            sleep(1);
            continue;
        }
        for (size_t i = 0; i < len; i += 4096)
            p[i] = (char)(i >> 12 | 1);
        total_mib += step_mib;
        printf("memhog: %ld MiB\n", total_mib);
        if (delay_ms > 0)
            usleep((useconds_t)delay_ms * 1000);
    }
}
