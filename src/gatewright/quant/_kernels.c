/*
 * Exact fixed-point kernels for the golden emulator (gatewright.quant.kernels loads them with ctypes).
 *
 * They compute the contract of docs/quantization.md on 16-bit raw integers with 32-bit sums, for
 * the layers whose bounds the Python side has checked: every sum, rounding half included, stays
 * below 2^31. On x86-64 with AVX2 the product is a register-blocked int16 kernel on vpmaddwd
 * (16 multiply-adds per instruction); elsewhere plain C that compilers vectorize as they can.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define GW_X86 1
/* the compiler builds an AVX2 and a baseline copy and picks one when the library loads */
#define GW_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define GW_CLONES
#endif

/* RND then SAT of float inputs into raw int16: floor(x * scale + 1/2) clamped to [lo, hi]. Exact for
 * formats of up to 16 bits: scale is a power of two and a scaled value below 2^23 adds 1/2 exactly
 * (a larger one saturates either way). Returns 1 when an input is NaN. */
GW_CLONES int32_t gw_quantize_f32(const float *x, int16_t *q, int64_t count, float scale, float lo, float hi) {
    int32_t nan = 0;
    for (int64_t i = 0; i < count; i++) {
        const float s = x[i];
        nan |= (s != s);
        float v = floorf(s * scale + 0.5f);
        v = v < lo ? lo : v;
        v = v > hi ? hi : v;
        q[i] = (int16_t)(int32_t)v;
    }
    return nan;
}

GW_CLONES int32_t gw_quantize_f64(const double *x, int16_t *q, int64_t count, double scale, double lo, double hi) {
    int32_t nan = 0;
    for (int64_t i = 0; i < count; i++) {
        const double s = x[i];
        nan |= (s != s);
        double v = floor(s * scale + 0.5);
        v = v < lo ? lo : v;
        v = v > hi ? hi : v;
        q[i] = (int16_t)(int32_t)v;
    }
    return nan;
}

static inline int16_t gw_requantize(int32_t acc, int32_t shift, int32_t lo, int32_t hi) {
    /* RND by an arithmetic shift (gcc and clang shift signed integers arithmetically), then SAT */
    int32_t y = shift > 0 ? (acc + ((int32_t)1 << (shift - 1))) >> shift : (int32_t)((uint32_t)acc << -shift);
    y = y < lo ? lo : y;
    y = y > hi ? hi : y;
    return (int16_t)y;
}

/* Weights are packed by gw_pack: for each block of 8 output columns and each pair of input rows
 * (t, t+1), 16 int16 values [w(t,j0) w(t+1,j0) w(t,j1) w(t+1,j1) ...]; padding is zero. x rows
 * have k values and the buffer one spare element, so reading a pair at an odd end is safe. */
int64_t gw_packed_size(int64_t k, int64_t m) { return ((m + 7) / 8) * ((k + 1) / 2) * 16; }

void gw_pack(const int16_t *w, int64_t k, int64_t m, int16_t *packed) {
    const int64_t pairs = (k + 1) / 2, blocks = (m + 7) / 8;
    memset(packed, 0, sizeof(int16_t) * (size_t)gw_packed_size(k, m));
    for (int64_t b = 0; b < blocks; b++)
        for (int64_t p = 0; p < pairs; p++)
            for (int64_t jj = 0; jj < 8; jj++)
                for (int64_t e = 0; e < 2; e++) {
                    const int64_t t = 2 * p + e, j = 8 * b + jj;
                    if (t < k && j < m) packed[((b * pairs + p) * 8 + jj) * 2 + e] = w[t * m + j];
                }
}

static void gw_dense_generic(const int16_t *x, int64_t n, int64_t k, const int16_t *packed, int64_t m,
                             const int32_t *bias, int32_t shift, int32_t lo, int32_t hi, int16_t *out) {
    const int64_t pairs = (k + 1) / 2, blocks = (m + 7) / 8;
    for (int64_t i = 0; i < n; i++) {
        const int16_t *row = x + i * k;
        for (int64_t b = 0; b < blocks; b++) {
            int32_t acc[8] = {0};
            const int16_t *wb = packed + b * pairs * 16;
            for (int64_t p = 0; p < pairs; p++) {
                const int32_t a0 = row[2 * p], a1 = (2 * p + 1 < k) ? row[2 * p + 1] : 0;
                for (int jj = 0; jj < 8; jj++) acc[jj] += a0 * wb[p * 16 + 2 * jj] + a1 * wb[p * 16 + 2 * jj + 1];
            }
            for (int jj = 0; jj < 8 && 8 * b + jj < m; jj++)
                out[i * m + 8 * b + jj] = gw_requantize(acc[jj] + bias[8 * b + jj], shift, lo, hi);
        }
    }
}

#ifdef GW_X86
/* Sums for rows r0 (and r1 when TWO) against NB blocks of 8 columns starting at block b0, into
 * lanes0 (lanes1). NB and TWO are compile-time constants, so the accumulators stay in registers
 * and two rows share each weight load. */
#define GW_SUMS(NB, TWO)                                                                                         \
    do {                                                                                                         \
        __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0, c0 = a0, c1 = a0, c2 = a0, c3 = a0;     \
        const int16_t *w0 = packed + (b0 * pairs) * 16;                                                          \
        for (int64_t p = 0; p < pairs; p++) {                                                                    \
            int32_t pair0, pair1 = 0;                                                                            \
            memcpy(&pair0, r0 + 2 * p, sizeof(pair0)); /* an odd k meets a zero weight */                        \
            if (TWO) memcpy(&pair1, r1 + 2 * p, sizeof(pair1));                                                  \
            const __m256i x0 = _mm256_set1_epi32(pair0), x1 = _mm256_set1_epi32(pair1);                         \
            const __m256i v0 = _mm256_loadu_si256((const __m256i *)(w0 + p * 16));                               \
            a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(x0, v0));                                                \
            if (TWO) c0 = _mm256_add_epi32(c0, _mm256_madd_epi16(x1, v0));                                       \
            if (NB > 1) {                                                                                        \
                const __m256i v1 = _mm256_loadu_si256((const __m256i *)(w0 + (pairs + p) * 16));                 \
                a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(x0, v1));                                            \
                if (TWO) c1 = _mm256_add_epi32(c1, _mm256_madd_epi16(x1, v1));                                   \
            }                                                                                                    \
            if (NB > 2) {                                                                                        \
                const __m256i v2 = _mm256_loadu_si256((const __m256i *)(w0 + (2 * pairs + p) * 16));             \
                a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(x0, v2));                                            \
                if (TWO) c2 = _mm256_add_epi32(c2, _mm256_madd_epi16(x1, v2));                                   \
            }                                                                                                    \
            if (NB > 3) {                                                                                        \
                const __m256i v3 = _mm256_loadu_si256((const __m256i *)(w0 + (3 * pairs + p) * 16));             \
                a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(x0, v3));                                            \
                if (TWO) c3 = _mm256_add_epi32(c3, _mm256_madd_epi16(x1, v3));                                   \
            }                                                                                                    \
        }                                                                                                        \
        _mm256_storeu_si256((__m256i *)(lanes0), a0);                                                            \
        _mm256_storeu_si256((__m256i *)(lanes0 + 8), a1);                                                        \
        _mm256_storeu_si256((__m256i *)(lanes0 + 16), a2);                                                       \
        _mm256_storeu_si256((__m256i *)(lanes0 + 24), a3);                                                       \
        _mm256_storeu_si256((__m256i *)(lanes1), c0);                                                            \
        _mm256_storeu_si256((__m256i *)(lanes1 + 8), c1);                                                        \
        _mm256_storeu_si256((__m256i *)(lanes1 + 16), c2);                                                       \
        _mm256_storeu_si256((__m256i *)(lanes1 + 24), c3);                                                       \
    } while (0)

/* Bias, RND, SAT and clamps for the sums of one row and nb blocks starting at block b0. */
__attribute__((target("avx2"))) static inline void gw_finish_avx2(const int32_t *lanes, int64_t b0, int64_t nb, int64_t m,
                                                                  const int32_t *bias, int32_t shift, int32_t lo,
                                                                  int32_t hi, int16_t *out_row) {
    const __m256i vhalf = _mm256_set1_epi32(shift > 0 ? (int32_t)1 << (shift - 1) : 0);
    const __m128i vshift = _mm_cvtsi32_si128(shift > 0 ? shift : -shift);
    const __m256i vlo = _mm256_set1_epi32(lo), vhi = _mm256_set1_epi32(hi);
    for (int64_t c = 0; c < nb; c++) {
        const int64_t j0 = 8 * (b0 + c);
        if (j0 + 8 <= m) { /* a full block: requantize 8 sums at once */
            __m256i v = _mm256_add_epi32(_mm256_loadu_si256((const __m256i *)(lanes + 8 * c)),
                                         _mm256_loadu_si256((const __m256i *)(bias + j0)));
            v = shift > 0 ? _mm256_sra_epi32(_mm256_add_epi32(v, vhalf), vshift) : _mm256_sll_epi32(v, vshift);
            v = _mm256_min_epi32(_mm256_max_epi32(v, vlo), vhi);
            _mm_storeu_si128((__m128i *)(out_row + j0),
                             _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1)));
        } else {
            for (int64_t jj = 0; j0 + jj < m; jj++)
                out_row[j0 + jj] = gw_requantize(lanes[8 * c + jj] + bias[j0 + jj], shift, lo, hi);
        }
    }
}

__attribute__((target("avx2"))) static void gw_dense_avx2(const int16_t *x, int64_t n, int64_t k, const int16_t *packed,
                                                          int64_t m, const int32_t *bias, int32_t shift, int32_t lo,
                                                          int32_t hi, int16_t *out) {
    const int64_t pairs = (k + 1) / 2, blocks = (m + 7) / 8;
    int32_t lanes0[32], lanes1[32];
    for (int64_t i = 0; i < n; i += 2) {
        const int16_t *r0 = x + i * k, *r1 = r0 + k;
        const int two = i + 1 < n;
        for (int64_t b0 = 0; b0 < blocks; b0 += 4) {
            const int64_t nb = blocks - b0 < 4 ? blocks - b0 : 4;
            if (two) {
                if (nb == 4) GW_SUMS(4, 1);
                else if (nb == 3) GW_SUMS(3, 1);
                else if (nb == 2) GW_SUMS(2, 1);
                else GW_SUMS(1, 1);
            } else {
                if (nb == 4) GW_SUMS(4, 0);
                else if (nb == 3) GW_SUMS(3, 0);
                else if (nb == 2) GW_SUMS(2, 0);
                else GW_SUMS(1, 0);
            }
            gw_finish_avx2(lanes0, b0, nb, m, bias, shift, lo, hi, out + i * m);
            if (two) gw_finish_avx2(lanes1, b0, nb, m, bias, shift, lo, hi, out + (i + 1) * m);
        }
    }
}
#endif

/* out[i, j] = clamp(RND(sum_t x[i, t] * w[t, j] + bias[j]), lo, hi); bias already carries the
 * accumulator's fraction bits; relu / clip that follow the layer are folded into lo and hi. */
void gw_dense(const int16_t *x, int64_t n, int64_t k, const int16_t *packed, int64_t m, const int32_t *bias,
              int32_t shift, int32_t lo, int32_t hi, int16_t *out) {
#ifdef GW_X86
    if (__builtin_cpu_supports("avx2")) {
        gw_dense_avx2(x, n, k, packed, m, bias, shift, lo, hi, out);
        return;
    }
#endif
    gw_dense_generic(x, n, k, packed, m, bias, shift, lo, hi, out);
}

/* For tests: force the portable kernel. */
void gw_dense_portable(const int16_t *x, int64_t n, int64_t k, const int16_t *packed, int64_t m, const int32_t *bias,
                       int32_t shift, int32_t lo, int32_t hi, int16_t *out) {
    gw_dense_generic(x, n, k, packed, m, bias, shift, lo, hi, out);
}

static struct PyModuleDef gw_module = {PyModuleDef_HEAD_INIT, "_kernels", "exact fixed-point kernels (ctypes)", -1,
                                       NULL, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&gw_module); }
