/* bnnbench-native: load a .bnn model, run timed inferences, print the samples.
 *
 *   bnnbench-native MODEL.bnn [--threads N] [--warmup W] [--runs R] [--input FILE.f32] [--isa ISA]
 *                   [--output FILE.f32] [--max-memory-mb M] [--json]
 *                   [--warmup-ms T] [--min-time-ms T] [--max-runs M]
 *
 * Protocol: warm-up runs continue until --warmup W runs are done AND --warmup-ms T ms of wall
 * time have passed; timed runs continue until --runs R runs are done AND their samples sum to
 * --min-time-ms T ms, but stop at --max-runs M (default R without --min-time-ms, else
 * 1000000; M < R is a usage error). Each sample is the CLOCK_MONOTONIC time of one inference
 * (bnn_run) only, as in bnn_benchmark; "runs" in the output is the number of samples taken.
 *
 * Input/output files are raw little-endian float32 in NCHW (or N x F) order. Without
 * --input a fixed-seed uniform [-1, 1) input is used, so runs are repeatable. Any error
 * gives one line on stderr and a non-zero exit status (2: usage, 1: everything else).
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bnn.h"
#include "timing.h" /* the clock bnn_benchmark reads */

static const char *prog = "bnnbench-native";

#define RUNS_MAX 1000000L /* bound of --warmup, --runs, --max-runs */
#define MS_MAX 86400000L  /* bound of --warmup-ms, --min-time-ms: one day */
#define OUT_ALIGN 64      /* the output buffer as bnn_benchmark allocates its own */

static int die(int code, const char *fmt, const char *a, const char *b)
{
    fprintf(stderr, "%s: error: ", prog);
    fprintf(stderr, fmt, a ? a : "", b ? b : "");
    fputc('\n', stderr);
    return code;
}

static int parse_int(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end != '\0' || v < lo || v > hi)
        return 0;
    *out = v;
    return 1;
}

static void print_dims(FILE *f, const uint32_t *d, int rank)
{
    fputc('[', f);
    for (int i = 0; i < rank; i++)
        fprintf(f, "%s%u", i ? ", " : "", d[i]);
    fputc(']', f);
}

static int read_input(const char *path, float *dst, size_t count)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return die(1, "cannot open input %s%s", path, NULL);
    size_t got = fread(dst, sizeof(float), count, f);
    int extra = fgetc(f) != EOF;
    fclose(f);
    if (got != count || extra) {
        char want[64];
        snprintf(want, sizeof want, "%zu", count);
        return die(1, "input file must hold exactly %s float32 values (%s)", want, path);
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *model_path = NULL, *in_path = NULL, *out_path = NULL, *isa = NULL;
    long threads = 1, warmup = 3, runs = 10, max_mb = 0;
    long warmup_ms = 0, min_time_ms = 0, max_runs = 0; /* max_runs 0: not given */
    int json = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const int has_val = i + 1 < argc;
        if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "--threads") && has_val) {
            if (!parse_int(argv[++i], 1, BNN_MAX_THREADS, &threads))
                return die(2, "--threads must be an integer in 1..16, got '%s'%s", argv[i], NULL);
        } else if (!strcmp(a, "--warmup") && has_val) {
            if (!parse_int(argv[++i], 0, 1000000, &warmup))
                return die(2, "--warmup must be an integer in 0..1000000, got '%s'%s", argv[i],
                           NULL);
        } else if (!strcmp(a, "--runs") && has_val) {
            if (!parse_int(argv[++i], 1, 1000000, &runs))
                return die(2, "--runs must be an integer in 1..1000000, got '%s'%s", argv[i],
                           NULL);
        } else if (!strcmp(a, "--warmup-ms") && has_val) {
            if (!parse_int(argv[++i], 0, MS_MAX, &warmup_ms))
                return die(2, "--warmup-ms must be an integer in 0..86400000 (ms), got '%s'%s",
                           argv[i], NULL);
        } else if (!strcmp(a, "--min-time-ms") && has_val) {
            if (!parse_int(argv[++i], 0, MS_MAX, &min_time_ms))
                return die(2, "--min-time-ms must be an integer in 0..86400000 (ms), got '%s'%s",
                           argv[i], NULL);
        } else if (!strcmp(a, "--max-runs") && has_val) {
            if (!parse_int(argv[++i], 1, RUNS_MAX, &max_runs))
                return die(2, "--max-runs must be an integer in 1..1000000, got '%s'%s",
                           argv[i], NULL);
        } else if (!strcmp(a, "--max-memory-mb") && has_val) {
            if (!parse_int(argv[++i], 1, LONG_MAX / 2, &max_mb))
                return die(2, "--max-memory-mb must be a positive integer, got '%s'%s",
                           argv[i], NULL);
        } else if (!strcmp(a, "--isa") && has_val) {
            isa = argv[++i];
        } else if (!strcmp(a, "--input") && has_val) {
            in_path = argv[++i];
        } else if (!strcmp(a, "--output") && has_val) {
            out_path = argv[++i];
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            printf("usage: %s MODEL.bnn [--threads N] [--warmup W] [--runs R] [--input FILE.f32]"
                   " [--output FILE.f32] [--max-memory-mb M] [--isa ISA] [--json]\n"
                   "       [--warmup-ms T] [--min-time-ms T] [--max-runs M]\n"
                   "  --warmup W, --warmup-ms T: warm up until W runs are done and T ms have"
                   " passed (default 3, 0)\n"
                   "  --runs R, --min-time-ms T: time runs until R are done and the samples"
                   " sum to T ms (default 10, 0)\n"
                   "  --max-runs M: but never more than M timed runs (M >= R; default R, or"
                   " 1000000 with --min-time-ms)\n"
                   "  --isa: portable, popcnt, avx2 or avx512 on x86-64 (default: the best"
                   " this CPU supports, or $BNNBENCH_ISA)\n",
                   prog);
            return 0;
        } else if (a[0] == '-' && a[1] != '\0') {
            return die(2, "unknown or incomplete option '%s'%s", a, NULL);
        } else if (!model_path) {
            model_path = a;
        } else {
            return die(2, "more than one model given ('%s')%s", a, NULL);
        }
    }
    if (!model_path)
        return die(2, "no model given (usage: %s MODEL.bnn [options], see --help)%s", prog, NULL);
    if (max_runs && max_runs < runs) {
        char m_s[24], r_s[24];
        snprintf(m_s, sizeof m_s, "%ld", max_runs);
        snprintf(r_s, sizeof r_s, "%ld", runs);
        return die(2, "--max-runs (%s) must be at least --runs (%s)", m_s, r_s);
    }
    if (!max_runs)
        max_runs = min_time_ms > 0 ? RUNS_MAX : runs;

    if (isa && bnn_set_isa(isa) != BNN_OK)
        return die(2, "--isa '%s' is unknown or not supported by this CPU%s", isa, NULL);

    char err[BNN_ERR_LEN];
    bnn_model *m = NULL;
    if (bnn_model_load_file(model_path, &m, err, sizeof err) != BNN_OK)
        return die(1, "%s: %s", model_path, err);
    if (max_mb > 0) {
        const uint64_t need = bnn_model_workspace_bytes(m, (int)threads);
        if (need > (uint64_t)max_mb << 20) {
            char msg[96];
            snprintf(msg, sizeof msg, "%llu MiB", (unsigned long long)(need >> 20));
            bnn_model_free(m);
            return die(1, "model needs %s of working memory, over --max-memory-mb%s", msg, NULL);
        }
    }
    bnn_ctx *ctx = bnn_ctx_create(m, (int)threads, err, sizeof err);
    if (!ctx) {
        bnn_model_free(m);
        return die(1, "%s%s", err, NULL);
    }
    const size_t n_in = bnn_model_input_count(m), n_out = bnn_model_output_count(m);
    const size_t out_bytes =
        n_out ? (n_out * sizeof(float) + OUT_ALIGN - 1) / OUT_ALIGN * OUT_ALIGN : OUT_ALIGN;
    float *in = malloc(n_in * sizeof *in), *out = aligned_alloc(OUT_ALIGN, out_bytes);
    size_t cap = (size_t)runs; /* grows by doubling up to max_runs */
    double *samples = malloc(cap * sizeof *samples);
    long warmup_done = 0, n = 0;
    double warmup_elapsed = 0, timed = 0;
    int rc = 0;
    if (!in || !out || !samples) {
        rc = die(1, "out of memory%s%s", NULL, NULL);
        goto done;
    }
    if (in_path) {
        if ((rc = read_input(in_path, in, n_in)))
            goto done;
    } else {
        uint64_t s = 0x9E3779B97F4A7C15ull; /* xorshift64*, fixed seed */
        for (size_t i = 0; i < n_in; i++) {
            s ^= s >> 12, s ^= s << 25, s ^= s >> 27;
            const uint64_t r = s * 0x2545F4914F6CDD1Dull;
            in[i] = (float)((double)(r >> 40) / (double)(1u << 24) * 2.0 - 1.0);
        }
    }
    /* Warm-up, untimed: until `warmup` runs are done and `warmup_ms` ms have passed. */
    const double w0 = bnn_now_ms();
    while (warmup_done < warmup || (warmup_ms > 0 && bnn_now_ms() - w0 < (double)warmup_ms)) {
        if (bnn_run(ctx, in, out) != BNN_OK) {
            rc = die(1, "benchmark failed%s%s", NULL, NULL);
            goto done;
        }
        warmup_done++;
    }
    warmup_elapsed = bnn_now_ms() - w0;
    /* Timed: like bnn_benchmark, a CLOCK_MONOTONIC stamp around each inference only, into
     * the same (warm) output buffer; until `runs` samples and `min_time_ms` ms of samples,
     * never past `max_runs`. */
    while (n < runs || (n < max_runs && timed < (double)min_time_ms)) {
        if ((size_t)n == cap) {
            size_t grow = cap * 2 < (size_t)max_runs ? cap * 2 : (size_t)max_runs;
            double *p = realloc(samples, grow * sizeof *samples);
            if (!p) {
                rc = die(1, "out of memory%s%s", NULL, NULL);
                goto done;
            }
            samples = p, cap = grow;
        }
        const double t0 = bnn_now_ms();
        const int st = bnn_run(ctx, in, out);
        samples[n] = bnn_now_ms() - t0;
        if (st != BNN_OK) {
            rc = die(1, "benchmark failed%s%s", NULL, NULL);
            goto done;
        }
        timed += samples[n++];
    }
    if (out_path) {
        bnn_run(ctx, in, out);
        FILE *f = fopen(out_path, "wb");
        if (!f || fwrite(out, sizeof *out, n_out, f) != n_out) {
            if (f)
                fclose(f);
            rc = die(1, "cannot write output %s%s", out_path, NULL);
            goto done;
        }
        if (fclose(f) != 0) {
            rc = die(1, "cannot write output %s%s", out_path, NULL);
            goto done;
        }
    }
    uint32_t din[4], dout[4];
    bnn_model_input_dims(m, din);
    bnn_model_output_dims(m, dout);
    if (json) {
        printf("{\"version\": \"%s\", \"isa\": \"%s\", \"threads\": %ld, \"warmup\": %ld, "
               "\"runs\": %ld, \"warmup_runs\": %ld, \"warmup_ms\": %.6f, \"timed_ms\": %.6f, "
               "\"requested\": {\"warmup\": %ld, \"runs\": %ld, \"warmup_ms\": %ld, "
               "\"min_time_ms\": %ld, \"max_runs\": %ld}, \"input_shape\": ",
               bnn_version(), bnn_kernel_isa(), threads, warmup, n, warmup_done,
               warmup_elapsed, timed, warmup, runs, warmup_ms, min_time_ms, max_runs);
        print_dims(stdout, din, bnn_model_input_rank(m));
        printf(", \"output_shape\": ");
        print_dims(stdout, dout, bnn_model_output_rank(m));
        printf(", \"samples_ms\": [");
        for (long i = 0; i < n; i++)
            printf("%s%.6f", i ? ", " : "", samples[i]);
        printf("]}\n");
    } else {
        qsort(samples, (size_t)n, sizeof *samples, bnn_cmp_double);
        const double median = n % 2 ? samples[n / 2] : (samples[n / 2 - 1] + samples[n / 2]) / 2;
        printf("bnnbench-native %s (%s), %s, %u layers\ninput ", bnn_version(),
               bnn_kernel_isa(), model_path, bnn_model_num_layers(m));
        print_dims(stdout, din, bnn_model_input_rank(m));
        printf(" -> output ");
        print_dims(stdout, dout, bnn_model_output_rank(m));
        printf("\n%ld threads, %ld runs (%.1f ms) after %ld warm-up (%.1f ms): min %.3f ms, "
               "median %.3f ms, mean %.3f ms\n",
               threads, n, timed, warmup_done, warmup_elapsed, samples[0], median,
               timed / (double)n);
    }
done:
    free(in);
    free(out);
    free(samples);
    bnn_ctx_free(ctx);
    bnn_model_free(m);
    return rc;
}
