/* rt's thread count, and how it follows the cores other processes leave free.
 *
 * rt's kernels split their work statically over rt_nthreads threads (oneDNN's matmuls too), so a
 * thread that loses its core to another process holds up every parallel region it is part of. With
 * one busy process beside it on 2 cores, GPT-2 2-layer S=64 ran at a median of 19.7 ms on 2 threads
 * against 15.2 ms on one (benchmarks/README.md, "Session 9"). So at the start of a run, at most
 * every SAMPLE_NS, rt measures how much of the CPUs it may run on other processes used since the
 * last look (/proc/stat's busy time of those CPUs minus this process's own CPU time; processes niced
 * below this one's priority do not count) and runs on
 * the cores left: rt_nthreads = round(cpus - foreign), between 1 and the count asked for. On an
 * idle machine that is the count asked for; the check costs a clock read per run and a read of
 * /proc/stat (~10 us) per SAMPLE_NS. The count changes only at the start of a run that began with no other
 * in flight (a run starting meanwhile reads it once per op, each op splitting its own work), so an op
 * splits its work by one value of it. */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <cblas.h>

#include "rt_kernel.h"
#include "rt_program.h"

#define SAMPLE_NS 100000000LL /* 100 ms: several jiffies per CPU, and soon after a load starts or stops */
#define PAUSE_NS (3 * SAMPLE_NS) /* a longer gap since the last run ended starts a new window */

int rt_nthreads = 1;
static int threads_wanted = 1;
static int adapting = 1;
static int runs_in_flight;
static int64_t last_run_end_ns;

static struct {
    int64_t wall_ns, own_ns, busy_ticks; /* at the last look */
} last;

static int64_t clock_ns(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Busy clock ticks so far of the CPUs this process may run on (*ncpus of them), or -1. */
static int64_t busy_ticks(int *ncpus)
{
    cpu_set_t allowed;
    if (sched_getaffinity(0, sizeof allowed, &allowed) != 0) return -1;
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return -1;
    char line[512];
    int64_t busy = 0;
    errno = 0;
    int niced = getpriority(PRIO_PROCESS, 0) > 0 && errno == 0;
    *ncpus = 0;
    while (fgets(line, sizeof line, f)) {
        int cpu;
        long long v[8] = {0};
        if (strncmp(line, "cpu", 3) != 0) break; /* the cpu lines come first */
        if (sscanf(line, "cpu%d %lld %lld %lld %lld %lld %lld %lld %lld", &cpu, &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7]) < 5 || cpu < 0 || cpu >= CPU_SETSIZE || !CPU_ISSET(cpu, &allowed))
            continue; /* the all-CPU total line, or a CPU not ours */
        /* all but idle and iowait (steal counts as taken); niced processes' time only when this process is
         * niced itself (then its own time is there), as below our priority they give the cores back */
        busy += v[0] + (niced ? v[1] : 0) + v[2] + v[5] + v[6] + v[7];
        (*ncpus)++;
    }
    fclose(f);
    return *ncpus ? busy : -1;
}

/* One look: the threads to run on, from what others used of our CPUs since the last look. */
static void look(int64_t now)
{
    int ncpus;
    int64_t busy = busy_ticks(&ncpus), own = clock_ns(CLOCK_PROCESS_CPUTIME_ID);
    if (busy < 0) return;
    /* After a pause between runs the window starts again, the count kept: what others did while this
     * process was idle (another engine's turn, in the benchmark harness) says little about now. */
    if (last.wall_ns && now - last_run_end_ns <= PAUSE_NS) {
        double wall_s = (now - last.wall_ns) * 1e-9;
        double others = ((double)(busy - last.busy_ticks) / (double)sysconf(_SC_CLK_TCK) -
                         (own - last.own_ns) * 1e-9) / wall_s;
        int n = (int)(ncpus - (others > 0 ? others : 0) + 0.5);
        rt_nthreads = n < 1 ? 1 : n > threads_wanted ? threads_wanted : n;
    }
    last.wall_ns = now, last.own_ns = own, last.busy_ticks = busy;
}

void rt_threads_run_begin(void)
{
    int alone = __atomic_fetch_add(&runs_in_flight, 1, __ATOMIC_ACQ_REL) == 0;
    if (!alone || !adapting || threads_wanted == 1) return; /* alone: no other run can be looking too */
    int64_t now = clock_ns(CLOCK_MONOTONIC);
    if (now - last.wall_ns >= SAMPLE_NS) look(now);
}

void rt_threads_run_end(void)
{
    if (adapting) last_run_end_ns = clock_ns(CLOCK_MONOTONIC);
    __atomic_fetch_sub(&runs_in_flight, 1, __ATOMIC_ACQ_REL);
}

/* rt's OpenMP loops hold all the parallelism, matmuls included (matmul.c splits them),
 * so OpenBLAS stays single-threaded: its spinning workers would fight OpenMP's. */
void rt_set_num_threads(int n, int adapt)
{
    threads_wanted = rt_nthreads = n < 1 ? 1 : n;
    adapting = adapt;
    last.wall_ns = 0;
    scipy_openblas_set_num_threads(1);
}

int rt_get_num_threads(void) { return threads_wanted; }

int rt_threads_in_use(void) { return rt_nthreads; }
