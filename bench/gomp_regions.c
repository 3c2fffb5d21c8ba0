// LD_PRELOAD logger for bench/lora-step-regions.sh: every GOMP_parallel call (libtorch's at::parallel_for and MKL's
// threaded GEMMs enter libgomp there) with its start and end on CLOCK_MONOTONIC (ns) and its team size, written to
// $GOMP_REGIONS_OUT at exit. TorchThreads (the C# kernels) looks GOMP_parallel up in libtorch's own scope, so its
// regions are not seen: they fall in the gaps between the logged ones. libtorch is dlopen'ed locally, so the real
// GOMP_parallel is taken from its bundled libgomp by name ($GOMP_REGIONS_LIB), already loaded (RTLD_NOLOAD).
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef void (*body_t)(void *);
static void (*real_parallel)(body_t, void *, unsigned, unsigned);
enum { MAX_REGIONS = 1 << 19 };
static double starts[MAX_REGIONS], ends[MAX_REGIONS];
static unsigned teams[MAX_REGIONS];
static long count;

static double now_ns(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e9 + t.tv_nsec; }

static void dump(void)
{
    FILE *f = fopen(getenv("GOMP_REGIONS_OUT"), "w");
    if (!f) return;
    for (long i = 0; i < count && i < MAX_REGIONS; i++) fprintf(f, "%.0f %.0f %u\n", starts[i], ends[i], teams[i]);
    fclose(f);
}

void GOMP_parallel(body_t fn, void *data, unsigned threads, unsigned flags)
{
    if (!real_parallel)
    {
        void *lib = dlopen(getenv("GOMP_REGIONS_LIB"), RTLD_NOW | RTLD_NOLOAD);
        real_parallel = lib ? (void (*)(body_t, void *, unsigned, unsigned))dlsym(lib, "GOMP_parallel") : NULL;
        if (!real_parallel) { fprintf(stderr, "gomp_regions: GOMP_parallel not found in %s\n", getenv("GOMP_REGIONS_LIB")); abort(); }
        atexit(dump);
    }
    double t0 = now_ns();
    real_parallel(fn, data, threads, flags);
    double t1 = now_ns();
    long i = __atomic_fetch_add(&count, 1, __ATOMIC_RELAXED);
    if (i < MAX_REGIONS) { starts[i] = t0; ends[i] = t1; teams[i] = threads; }
}
