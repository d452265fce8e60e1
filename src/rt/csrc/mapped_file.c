/* A model file mapped so that a served model never sees it change.
 *
 * The weights are read lazily through a shared mapping of the file (a served model keeps only the
 * pages it reads resident, and gives back those it has copied into its own layout). A file changed
 * under a shared mapping would change the answers, and one truncated would kill the process with
 * SIGBUS. So the file is mapped under a read lease (fcntl F_SETLEASE F_RDLCK): a process that opens it
 * to write or truncate it is held in open()/truncate() until the lease is given up (at most
 * /proc/sys/fs/lease-break-time seconds), and the lease holder gets a signal. Here that signal goes
 * to one watcher thread (F_SETOWN_EX to its thread id, the signal blocked there and taken with
 * sigwaitinfo), which copies the ranges the program still reads into anonymous memory, moves that
 * memory over the very same addresses in one mremap(MREMAP_FIXED) (so every pointer into the
 * weights, op records included, stays valid and reads the same bytes), and only then gives the lease
 * up. Where no lease can be had (a file the process does not own, a file system without leases, a
 * file already open for writing), every byte is copied into anonymous memory at once.
 */
#define _GNU_SOURCE
#include "mapped_file.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

struct rt_mapped {
    char *data;
    size_t size;             /* bytes of the file mapped */
    size_t span;             /* mapped bytes (whole pages) */
    int fd;                  /* leased descriptor, -1 once the lease is given up */
    int state;
    int64_t *keep;           /* (start, length) pairs copied on a break; NULL = everything */
    int64_t nkeep;
    rt_mapped *next;
};

/* A real-time signal no library rt loads uses; thread-directed at the watcher only. */
#define RT_LEASE_SIGNAL (SIGRTMAX - 3)

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static rt_mapped *leased;           /* every mapping in RT_MAPPED_LEASED state, under `lock` */
static pid_t watcher_tid;           /* under `lock`; 0 until this process has a watcher */
static pthread_mutex_t started_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t started = PTHREAD_COND_INITIALIZER;
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;

static char *anonymous(size_t span) {
    void *p = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static void unlink_leased(rt_mapped *m) {
    for (rt_mapped **p = &leased; *p; p = &(*p)->next)
        if (*p == m) {
            *p = m->next;
            return;
        }
}

static void release_lease(rt_mapped *m) {
    fcntl(m->fd, F_SETLEASE, F_UNLCK);
    close(m->fd);
    m->fd = -1;
}

/* Under `lock`: copy what is kept into anonymous memory over the same addresses, then let the writer
 * go. Without memory for the copy the lease is given up all the same (the writer would otherwise
 * wait out lease-break-time and the kernel would break it anyway). */
static void detach(rt_mapped *m) {
    char *copy = anonymous(m->span);
    if (copy) {
        if (m->keep == NULL) {
            memcpy(copy, m->data, m->size);
        } else {
            for (int64_t i = 0; i < m->nkeep; i++)
                memcpy(copy + m->keep[2 * i], m->data + m->keep[2 * i], (size_t)m->keep[2 * i + 1]);
        }
        mprotect(copy, m->span, PROT_READ);
        if (mremap(copy, m->span, m->span, MREMAP_MAYMOVE | MREMAP_FIXED, m->data) == MAP_FAILED)
            munmap(copy, m->span);
    }
    unlink_leased(m);
    m->state = RT_MAPPED_DETACHED;
    release_lease(m);
}

static void *watch(void *unused) {
    (void)unused;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, RT_LEASE_SIGNAL);
    pthread_mutex_lock(&started_lock);
    watcher_tid = (pid_t)syscall(SYS_gettid);
    pthread_cond_signal(&started);
    pthread_mutex_unlock(&started_lock);
    for (;;) {
        siginfo_t info;
        if (sigwaitinfo(&set, &info) < 0)
            continue;
        pthread_mutex_lock(&lock);
        for (rt_mapped *m = leased; m; m = m->next)
            if (m->fd == info.si_fd) {
                detach(m);
                break;
            }
        pthread_mutex_unlock(&lock);
    }
    return NULL;
}

/* fork(): the child has no watcher, and the leases of the mappings it inherits are the parent's
 * (one open file description): it must neither give them up nor be told of their breaks. Its
 * inherited mappings become plain shared mappings (RT_MAPPED_INHERITED); what it loads itself gets
 * its own watcher and leases. */
static void before_fork(void) { pthread_mutex_lock(&lock); }
static void after_fork_parent(void) { pthread_mutex_unlock(&lock); }
static void after_fork_child(void) {
    for (rt_mapped *m = leased; m; m = m->next)
        m->state = RT_MAPPED_INHERITED;
    leased = NULL;
    watcher_tid = 0;
    pthread_mutex_unlock(&lock);
}
static void watch_forks(void) { pthread_atfork(before_fork, after_fork_parent, after_fork_child); }

static void start_watcher(void) {
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, RT_LEASE_SIGNAL);
    pthread_sigmask(SIG_BLOCK, &set, &old);     /* the watcher inherits the mask: blocked there */
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    pthread_t t;
    int rc = pthread_create(&t, &attr, watch, NULL);
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc)
        return;
    pthread_mutex_lock(&started_lock);
    while (!watcher_tid)
        pthread_cond_wait(&started, &started_lock);
    pthread_mutex_unlock(&started_lock);
}

/* Under `lock`: take a read lease on m->fd whose break signals the watcher; 0 on success. */
static int take_lease(rt_mapped *m) {
    pthread_once(&fork_once, watch_forks);
    if (!watcher_tid)
        start_watcher();
    if (!watcher_tid)
        return -1;
    struct f_owner_ex owner = {F_OWNER_TID, watcher_tid};
    if (fcntl(m->fd, F_SETOWN_EX, &owner) || fcntl(m->fd, F_SETSIG, RT_LEASE_SIGNAL))
        return -1;
    return fcntl(m->fd, F_SETLEASE, F_RDLCK);
}

static int read_all(int fd, char *to, size_t size) {
    for (size_t done = 0; done < size;) {
        ssize_t n = pread(fd, to + done, size - done, (off_t)done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        done += (size_t)n;
    }
    return 0;
}

rt_mapped *rt_mapped_open(int fd, int64_t size, char *msg, size_t msglen) {
    long page = sysconf(_SC_PAGESIZE);
    rt_mapped *m = calloc(1, sizeof *m);
    if (!m || size <= 0) {
        snprintf(msg, msglen, size <= 0 ? "empty file" : "out of memory");
        free(m);
        return NULL;
    }
    m->size = (size_t)size;
    m->span = (m->size + (size_t)page - 1) / (size_t)page * (size_t)page;
    m->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (m->fd < 0) {
        snprintf(msg, msglen, "%s", strerror(errno));
        free(m);
        return NULL;
    }
    pthread_mutex_lock(&lock);
    if (take_lease(m) == 0) {
        void *p = mmap(NULL, m->span, PROT_READ, MAP_SHARED, m->fd, 0);
        if (p != MAP_FAILED) {
            m->data = p;
            m->state = RT_MAPPED_LEASED;
            m->next = leased;
            leased = m;
            pthread_mutex_unlock(&lock);
            return m;
        }
    }
    pthread_mutex_unlock(&lock);
    /* no lease (or no mapping under it): rt's own copy of every byte */
    m->data = anonymous(m->span);
    int failed = !m->data || read_all(m->fd, m->data, m->size);
    snprintf(msg, msglen, "%s", m->data ? strerror(errno) : "out of memory");
    release_lease(m);
    if (failed) {
        if (m->data)
            munmap(m->data, m->span);
        free(m);
        return NULL;
    }
    mprotect(m->data, m->span, PROT_READ);
    m->state = RT_MAPPED_PRIVATE;
    return m;
}

const char *rt_mapped_data(const rt_mapped *m) { return m->data; }

int rt_mapped_state(rt_mapped *m) {
    pthread_mutex_lock(&lock);
    int s = m->state;
    pthread_mutex_unlock(&lock);
    return s;
}

/* Is [start, start + length) inside one of m's kept ranges (or everything is kept)? */
static int kept(const rt_mapped *m, int64_t start, int64_t length) {
    if (m->keep == NULL)
        return 1;
    for (int64_t i = 0; i < m->nkeep; i++)
        if (m->keep[2 * i] <= start && start + length <= m->keep[2 * i] + m->keep[2 * i + 1])
            return 1;
    return 0;
}

int rt_mapped_keep(rt_mapped *m, const int64_t *ranges, int64_t nranges) {
    int64_t *copy = NULL;
    if (ranges != NULL) {
        for (int64_t i = 0; i < nranges; i++)
            if (ranges[2 * i] < 0 || ranges[2 * i + 1] < 0 ||
                    ranges[2 * i + 1] > (int64_t)m->size - ranges[2 * i])
                return -1;
        copy = malloc((size_t)(2 * nranges + 1) * sizeof *copy);
        if (!copy)
            return -1;
        memcpy(copy, ranges, (size_t)(2 * nranges) * sizeof *copy);
    }
    pthread_mutex_lock(&lock);
    int rc = 0;
    if (m->state == RT_MAPPED_DETACHED) {   /* what is gone stays gone: only a narrower set is fine */
        for (int64_t i = 0; ranges && i < nranges && rc == 0; i++)
            rc = kept(m, ranges[2 * i], ranges[2 * i + 1]) ? 0 : -1;
        if (!ranges && m->keep)
            rc = -1;
        free(copy);
    } else if (m->state == RT_MAPPED_LEASED) {
        free(m->keep);
        m->keep = copy;
        m->nkeep = nranges;
    } else {
        free(copy);
    }
    pthread_mutex_unlock(&lock);
    return rc;
}

void rt_mapped_drop(rt_mapped *m, int64_t start, int64_t length) {
    long page = sysconf(_SC_PAGESIZE);
    int64_t lo = (start + page - 1) / page * page, hi = (start + length) / page * page;
    pthread_mutex_lock(&lock);
    if (m->state == RT_MAPPED_LEASED && hi > lo && start >= 0 && start + length <= (int64_t)m->size)
        madvise(m->data + lo, (size_t)(hi - lo), MADV_DONTNEED);
    pthread_mutex_unlock(&lock);
}

void rt_mapped_close(rt_mapped *m) {
    pthread_mutex_lock(&lock);
    if (m->state == RT_MAPPED_LEASED) {
        unlink_leased(m);
        release_lease(m);
    } else if (m->fd >= 0) {       /* inherited: the lease is the parent's */
        close(m->fd);
    }
    pthread_mutex_unlock(&lock);
    munmap(m->data, m->span);
    free(m->keep);
    free(m);
}
