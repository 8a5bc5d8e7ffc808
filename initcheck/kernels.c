/* One fused pass over a tensor's stored values: every statistic stats.py needs, at memory speed.
 *
 * Compiled at install time into initcheck/_kernels.so (hatch_build.py) and called through ctypes
 * (native.py), which releases the GIL, so two threads scan two tensors at once. When no C
 * compiler was there, stats.py computes the same statistics with numpy, a few times slower;
 * tests hold both to one float64 reference.
 *
 * Each block of BLOCK values is decoded once and folded into LANES independent float32
 * accumulators (sum and sum of squares around a shift, min, max, zero count), a shape the
 * compiler turns into SIMD without -ffast-math; each block's partials then go into doubles.
 * NaN and Inf need no test of their own: they make the block's sum of squares non-finite, and
 * only such a block (or one whose squares overflow float32) is redone value by value in double,
 * counting NaN and Inf and leaving them out of the moments. The caller's data is only read.
 */

#include <math.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

#define LANES 16
#define BLOCK 4096
#define SHIFT_SAMPLE 4096

enum { KIND_F32 = 0, KIND_F16 = 1, KIND_BF16 = 2, KIND_TABLE8 = 3 };

typedef struct {
    int64_t finite, nan, inf, zeros, first_nonfinite;   /* first_nonfinite: flat index, -1 if none */
    double min, max, s1, s2, shift;                     /* s1, s2: sums of (x - shift), (x - shift)^2 */
} ic_stats;

static inline float from_bits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t to_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

static inline float dec_f32(const void *p, int64_t i, const float *t) { (void)t; return ((const float *)p)[i]; }
static inline float dec_bf16(const void *p, int64_t i, const float *t) {
    (void)t;
    return from_bits((uint32_t)((const uint16_t *)p)[i] << 16);
}
/* IEEE half: scale the shifted bits by 2^112 (rebiases the exponent, subnormals included),
 * then give Inf/NaN their all-ones exponent back (Fabian Giesen's half_to_float_fast5). */
static inline float dec_f16(const void *p, int64_t i, const float *t) {
    (void)t;
    uint16_t h = ((const uint16_t *)p)[i];
    float f = from_bits((uint32_t)(h & 0x7fff) << 13) * 0x1p112f;
    uint32_t u = to_bits(f);
    if (f >= 65536.0f) u |= 0x7f800000u;
    return from_bits(u | (uint32_t)(h & 0x8000) << 16);
}
static inline float dec_table8(const void *p, int64_t i, const float *t) { return t[((const uint8_t *)p)[i]]; }

static inline void finish_shift(double n, double s, double ss, ic_stats *out) {
    /* shift only where the mean is large against the spread: there sum(x^2) - n*mean^2 cancels */
    double m = n > 0 ? s / n : 0.0, var = n > 0 ? ss / n - m * m : 0.0;
    out->shift = (m * m > var) ? (double)(float)m : 0.0;
}

/* AVX2 and FMA (x86-64-v3) where the CPU has them, baseline SSE2 elsewhere: the loader picks at
 * run time (GCC ifunc). hatch_build.py retries with IC_NO_CLONES where the compiler refuses. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && !defined(IC_NO_CLONES)
#define CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define CLONES
#endif

/* The hot loop: LANES values at a time into per-lane accumulators. Written twice by the caller,
 * once with the shift a literal 0 (the usual case) so that the subtraction compiles away. */
#define LANE_LOOP(DEC, SH)                                                                             \
    {                                                                                                  \
        for (; i + LANES <= len; i += LANES) {                                                         \
            for (int j = 0; j < LANES; j++) {                                                          \
                float v = DEC(p, at + i + j, table), d = v - (SH);                                     \
                a1[j] += d; a2[j] += d * d;                                                            \
                lo[j] = v < lo[j] ? v : lo[j]; hi[j] = v > hi[j] ? v : hi[j];                          \
                z[j] += v == 0.0f;                                                                     \
            }                                                                                          \
        }                                                                                              \
    }

/* One generic body, specialised per stored kind so that decoding inlines into the loop.
 * gather: for each row, the values at cols[0..n_cols_sub) as float32 into sub (row-major). */
#define DEFINE_KERNEL(NAME, DEC)                                                                        \
static CLONES void NAME(const void *p, const float *table, int64_t rows, int64_t cols, ic_stats *out,        \
                 double *row_s1, double *row_s2, const int64_t *sub_cols, int64_t n_sub, float *sub) { \
    int64_t n = rows * cols;                                                                           \
    { /* the shift, from the first finite values */                                                   \
        double s = 0, ss = 0, k = 0;                                                                   \
        int64_t m = n < SHIFT_SAMPLE ? n : SHIFT_SAMPLE;                                               \
        for (int64_t i = 0; i < m; i++) {                                                              \
            double v = DEC(p, i, table);                                                               \
            if (isfinite(v)) { s += v; ss += v * v; k += 1; }                                          \
        }                                                                                              \
        finish_shift(k, s, ss, out);                                                                   \
    }                                                                                                  \
    const float sh = (float)out->shift;                                                                \
    double mn = INFINITY, mx = -INFINITY, t1 = 0, t2 = 0;                                              \
    int64_t zeros = 0, nan = 0, inf = 0, first = -1;                                                   \
    for (int64_t r = 0; r < rows; r++) {                                                               \
        const int64_t base = r * cols;                                                                 \
        double r1 = 0, r2 = 0;                                                                         \
        for (int64_t b = 0; b < cols; b += BLOCK) {                                                    \
            const int64_t len = cols - b < BLOCK ? cols - b : BLOCK, at = base + b;                    \
            float a1[LANES], a2[LANES], lo[LANES], hi[LANES];                                          \
            int32_t z[LANES];                                                                          \
            for (int j = 0; j < LANES; j++) { a1[j] = a2[j] = 0; lo[j] = INFINITY; hi[j] = -INFINITY; z[j] = 0; } \
            int64_t i = 0;                                                                             \
            if (sh == 0.0f) LANE_LOOP(DEC, 0.0f) else LANE_LOOP(DEC, sh)                               \
            for (; i < len; i++) {                                                                     \
                float v = DEC(p, at + i, table), d = v - sh;                                           \
                a1[0] += d; a2[0] += d * d;                                                            \
                lo[0] = v < lo[0] ? v : lo[0]; hi[0] = v > hi[0] ? v : hi[0];                          \
                z[0] += v == 0.0f;                                                                     \
            }                                                                                          \
            double b1 = 0, b2 = 0, blo = INFINITY, bhi = -INFINITY;                                    \
            int64_t bz = 0;                                                                            \
            for (int j = 0; j < LANES; j++) {                                                          \
                b1 += a1[j]; b2 += a2[j]; bz += z[j];                                                  \
                blo = lo[j] < blo ? lo[j] : blo; bhi = hi[j] > bhi ? hi[j] : bhi;                      \
            }                                                                                          \
            if (!isfinite(b1) || !isfinite(b2)) { /* NaN/Inf in the block, or float32 overflow */     \
                b1 = b2 = 0; bz = 0; blo = INFINITY; bhi = -INFINITY;                                  \
                for (int64_t k = 0; k < len; k++) {                                                    \
                    float v = DEC(p, at + k, table);                                                   \
                    if (!isfinite(v)) {                                                                \
                        if (isnan(v)) nan++; else inf++;                                               \
                        if (first < 0) first = at + k;                                                 \
                        /* a row's sums count it as 0, like the numpy path's cleaned values */         \
                        if (row_s1) { r1 -= out->shift; r2 += out->shift * out->shift; }               \
                        continue;                                                                      \
                    }                                                                                  \
                    double d = (double)v - out->shift;                                                 \
                    b1 += d; b2 += d * d; bz += v == 0.0f;                                             \
                    blo = v < blo ? v : blo; bhi = v > bhi ? v : bhi;                                  \
                }                                                                                      \
            }                                                                                          \
            t1 += b1; t2 += b2; zeros += bz; r1 += b1; r2 += b2;                                       \
            mn = blo < mn ? blo : mn; mx = bhi > mx ? bhi : mx;                                        \
        }                                                                                              \
        if (row_s1) { row_s1[r] = r1; row_s2[r] = r2; }                                                \
        if (sub) {                                                                                     \
            float *o = sub + r * n_sub;                                                                \
            for (int64_t k = 0; k < n_sub; k++) o[k] = DEC(p, base + sub_cols[k], table);              \
        }                                                                                              \
    }                                                                                                  \
    out->nan = nan; out->inf = inf; out->finite = n - nan - inf; out->zeros = zeros;                   \
    out->first_nonfinite = first; out->min = mn; out->max = mx; out->s1 = t1; out->s2 = t2;            \
}

DEFINE_KERNEL(kernel_f32, dec_f32)
DEFINE_KERNEL(kernel_f16, dec_f16)
DEFINE_KERNEL(kernel_bf16, dec_bf16)
DEFINE_KERNEL(kernel_table8, dec_table8)

/* The SHA-256 of this file when it was compiled (set by hatch_build.py), so that a library built
 * from an older kernels.c is caught (tests/test_native.py). */
#ifndef IC_SOURCE_SHA256
#define IC_SOURCE_SHA256 "unknown"
#endif
const char *ic_source_sha256(void) { return IC_SOURCE_SHA256; }

/* The entry point. Returns 0, or -1 for a kind it does not know (the caller then uses numpy).
 *   data: rows x cols stored values, contiguous; table: 256 floats for KIND_TABLE8 (fp8), else NULL;
 *   row_s1/row_s2: per-row sums around the shift, or NULL; sub_cols/sub: the gathered columns, or NULL. */
int ic_fused_stats(const void *data, int kind, const float *table, int64_t rows, int64_t cols,
                          ic_stats *out, double *row_s1, double *row_s2,
                          const int64_t *sub_cols, int64_t n_sub, float *sub) {
    memset(out, 0, sizeof *out);
    switch (kind) {
    case KIND_F32: kernel_f32(data, table, rows, cols, out, row_s1, row_s2, sub_cols, n_sub, sub); return 0;
    case KIND_F16: kernel_f16(data, table, rows, cols, out, row_s1, row_s2, sub_cols, n_sub, sub); return 0;
    case KIND_BF16: kernel_bf16(data, table, rows, cols, out, row_s1, row_s2, sub_cols, n_sub, sub); return 0;
    case KIND_TABLE8: kernel_table8(data, table, rows, cols, out, row_s1, row_s2, sub_cols, n_sub, sub); return 0;
    }
    return -1;
}

/* Rows that share a hash code, for duplicate-row detection (rowdups.py; numpy sorts instead).
 * codes: n rows x bands codes, row-major. For each band, each row whose code an earlier row had
 * is paired with the first row of that code, for up to max_bucket rows per code (the rest are
 * left out, like rowdups._bucket_pairs). lead/member have room for n * bands pairs. Returns the
 * number of pairs, or -1 if out of memory. One open-addressing table per band, O(n). */
int64_t ic_bucket_pairs(const int64_t *codes, int64_t n, int64_t bands, int64_t max_bucket,
                        int64_t *lead, int64_t *member) {
    int64_t size = 16;
    while (size < 2 * n) size <<= 1;
    int64_t *key = malloc(sizeof(int64_t) * size), *first = malloc(sizeof(int64_t) * size),
            *count = malloc(sizeof(int64_t) * size);
    if (!key || !first || !count) { free(key); free(first); free(count); return -1; }
    int64_t out = 0;
    for (int64_t b = 0; b < bands; b++) {
        for (int64_t s = 0; s < size; s++) count[s] = 0;
        for (int64_t r = 0; r < n; r++) {
            int64_t c = codes[r * bands + b];
            uint64_t h = ((uint64_t)c * 0x9E3779B97F4A7C15ull) >> 17;
            int64_t s = (int64_t)(h & (uint64_t)(size - 1));
            while (count[s] && key[s] != c) s = (s + 1) & (size - 1);
            if (!count[s]) { key[s] = c; first[s] = r; count[s] = 1; continue; }
            if (count[s] < max_bucket) { lead[out] = first[s]; member[out] = r; out++; }
            count[s]++;
        }
    }
    free(key); free(first); free(count);
    return out;
}
