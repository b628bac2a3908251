/* Corpus runner for the fuzz tests (tests/test_native_fuzz.py), built with ASan + UBSan by
 * `make asan`: every file named on the command line is loaded, given a context with two
 * threads and run once, as `bnnbench-native --runs 1 --warmup 0 --threads 2
 * --max-memory-mb 16` would, but in one process, so thousands of mutated models cost one
 * sanitized start instead of one each (as libFuzzer replays a corpus).
 *
 * Output, one line per file: "<path>\tok" or "<path>\terror: <message>". The path and the
 * tab are written and flushed before the model is touched, so when a sanitizer aborts the
 * process the last, unfinished line names the input that did it. Leaks are reported by
 * LeakSanitizer at exit, over every input.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bnn.h"

#define MAX_WORKSPACE (16ull << 20) /* the CLI's --max-memory-mb 16 */
#define THREADS 2
#define OUT_ALIGN 64

/* The output buffer as the CLI and bnn_benchmark allocate it: 64-byte aligned. */
static float *zeroed_aligned(size_t bytes) {
    const size_t size = (bytes + OUT_ALIGN) / OUT_ALIGN * OUT_ALIGN;
    float *p = aligned_alloc(OUT_ALIGN, size);
    if (p)
        memset(p, 0, size);
    return p;
}

static void one(const char *path) {
    char err[BNN_ERR_LEN] = "";
    bnn_model *m = NULL;
    printf("%s\t", path);
    fflush(stdout);
    if (bnn_model_load_file(path, &m, err, sizeof err) != BNN_OK) {
        printf("error: %s\n", err);
        return;
    }
    if (bnn_model_workspace_bytes(m, THREADS) > MAX_WORKSPACE) {
        printf("error: model needs more than %llu MiB of working memory\n",
               (unsigned long long)(MAX_WORKSPACE >> 20));
        bnn_model_free(m);
        return;
    }
    bnn_ctx *ctx = bnn_ctx_create(m, THREADS, err, sizeof err);
    if (!ctx) {
        printf("error: %s\n", err);
        bnn_model_free(m);
        return;
    }
    float *in = calloc(bnn_model_input_count(m) + 1, sizeof *in);
    float *out = zeroed_aligned(bnn_model_output_count(m) * sizeof *out);
    if (!in || !out)
        printf("error: out of memory\n");
    else if (bnn_run(ctx, in, out) != BNN_OK)
        printf("error: run failed\n");
    else
        printf("ok\n");
    free(in);
    free(out);
    bnn_ctx_free(ctx);
    bnn_model_free(m);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        one(argv[i]);
    return 0;
}
