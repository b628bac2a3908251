/* A/B timing of two builds (or two thread counts) of the native engine in one process.
 *
 *     make -C native tools
 *     build/bnn-ab MODEL.bnn LIB_A[:THREADS] LIB_B[:THREADS] [RUNS]
 *
 * Loads each libbnn.so into its own link-map namespace (dlmopen), creates a context per
 * side and then alternates single timed inferences A, B, A, B, ... RUNS times, so slow drift
 * of a shared or throttled machine hits both sides alike. Prints each side's median and
 * minimum (ms) and the ratio of medians A/B (> 1: B is faster). The input is a fixed
 * pseudo-random pattern. For comparing a change against the last commit:
 *
 *     git stash; make -C native BUILD=/tmp/base /tmp/base/libbnn.so; git stash pop
 *     native/build/bnn-ab m.bnn /tmp/base/libbnn.so native/build/libbnn.so 200
 *
 * or one build at 1 and 2 threads (thread scaling): LIB:1 LIB:2, or one build on two files
 * of one model (e.g. two layer orders): MODEL "A.bnn,B.bnn" (same input size), LIB LIB.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int (*load_fn)(const char *, void **, char *, size_t);
typedef void *(*ctx_fn)(void *, int, char *, size_t);
typedef int (*bench_fn)(void *, const float *, int, int, double *);
typedef size_t (*count_fn)(const void *);

/* The POSIX idiom for dlsym into a function pointer without an object->function cast. */
#define SYM(fp, h, name) (*(void **)(&(fp)) = dlsym((h), (name)))

static int cmp(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s MODEL.bnn[,MODEL_B.bnn] LIB_A[:THREADS] LIB_B[:THREADS] [RUNS]\n", argv[0]);
        return 2;
    }
    const int runs = argc > 4 ? atoi(argv[4]) : 100;
    if (runs < 1)
        return 2;
    void *ctx[2];
    bench_fn bench[2];
    float *x = NULL;
    char err[256], models[4096];
    snprintf(models, sizeof models, "%s", argv[1]);
    char *comma = strchr(models, ',');
    if (comma)
        *comma = '\0';
    const char *model[2] = {models, comma ? comma + 1 : models};
    size_t n_in = 0;
    for (int i = 0; i < 2; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s", argv[2 + i]);
        int threads = 1;
        char *colon = strrchr(path, ':');
        if (colon) {
            *colon = '\0';
            threads = atoi(colon + 1);
        }
        void *h = dlmopen(LM_ID_NEWLM, path, RTLD_NOW | RTLD_LOCAL);
        if (!h) {
            fprintf(stderr, "%s\n", dlerror());
            return 1;
        }
        load_fn load;
        ctx_fn create;
        count_fn count;
        if (!SYM(load, h, "bnn_model_load_file") || !SYM(create, h, "bnn_ctx_create") ||
            !SYM(bench[i], h, "bnn_benchmark") || !SYM(count, h, "bnn_model_input_count")) {
            fprintf(stderr, "%s: not a bnnbench native library\n", path);
            return 1;
        }
        void *m = NULL;
        if (load(model[i], &m, err, sizeof err)) {
            fprintf(stderr, "%s: %s\n", path, err);
            return 1;
        }
        if (!(ctx[i] = create(m, threads, err, sizeof err))) {
            fprintf(stderr, "%s: %s\n", path, err);
            return 1;
        }
        if (!x) {
            n_in = count(m);
            if (!(x = malloc(n_in * sizeof *x)))
                return 1;
            for (size_t k = 0; k < n_in; k++)
                x[k] = (float)((k * 7919) % 1000) / 500.0f - 1.0f;
        } else if (count(m) != n_in) {
            fprintf(stderr, "%s: input size differs from %s's\n", model[i], model[0]);
            return 1;
        }
    }
    double *s[2] = {malloc((size_t)runs * sizeof(double)), malloc((size_t)runs * sizeof(double))};
    double warm;
    if (!s[0] || !s[1])
        return 1;
    for (int i = 0; i < 2; i++)
        bench[i](ctx[i], x, 3, 1, &warm);
    for (int r = 0; r < runs; r++)
        for (int i = 0; i < 2; i++)
            bench[i](ctx[i], x, 0, 1, &s[i][r]);
    for (int i = 0; i < 2; i++) {
        qsort(s[i], (size_t)runs, sizeof(double), cmp);
        printf("%c %s: median %.4f ms, min %.4f ms\n", 'A' + i, argv[2 + i], s[i][runs / 2],
               s[i][0]);
    }
    printf("A/B median ratio %.3f\n", s[0][runs / 2] / s[1][runs / 2]);
    return 0;
}
