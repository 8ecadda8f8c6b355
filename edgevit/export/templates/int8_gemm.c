/* ---- int8 matrix products on the CPU's dot-product instructions ----
 *
 * out[m][n] = sum over k of x[m][k] * w[k][n], in int32: exact, so every path below gives the same
 * numbers as the tinygrad kernel it replaces. The weights were re-arranged at export as [K/4][N][4]
 * (K rounded up to a multiple of 4 with zero weights): the four inputs that feed one output sit side
 * by side in one 32-bit lane, which is the operand
 * x86's vpdpbusd (AVX512-VNNI) and ARM's sdot (ARMv8.2 dotprod) multiply and add in one instruction.
 * vpdpbusd multiplies unsigned by signed bytes, so there x goes in as x + 128 and 128 * colsum[n]
 * (colsum[n] = sum over k of w[k][n], exported with the weights) takes the excess back out. Other
 * targets (Cortex-M, WebAssembly, x86 without VNNI) run the same sum in plain C99. Among the kernels
 * below, edgevit_gemm_s8_<M>x<K>x<N> are the exporter's: this function at one shape each.
 */
#if defined(__AVX512VNNI__) && defined(__AVX512F__) && defined(__GNUC__)
#include <immintrin.h>
#include <string.h>
#define EDGEVIT_INT8_DOT "vpdpbusd (AVX512-VNNI)"

/* rows x (16 * blocks) outputs in registers: constant sizes once inlined, so the accumulators never
 * touch memory */
static inline __attribute__((always_inline)) void edgevit_gemm_s8_tile(
    int *restrict out, const signed char *restrict x, const signed char *restrict w, const int *restrict colsum,
    int K, int N, int n0, int rows, int blocks) {
  __m512i acc[4][4], wv[4];
  int r, b, g;
  for (b = 0; b < blocks; b++) {
    __m512i start = _mm512_mullo_epi32(_mm512_loadu_si512(colsum + n0 + 16 * b), _mm512_set1_epi32(-128));
    for (r = 0; r < rows; r++) acc[r][b] = start;
  }
  for (g = 0; g < K / 4; g++) {
    for (b = 0; b < blocks; b++) wv[b] = _mm512_loadu_si512(w + ((size_t)g * N + n0 + 16 * b) * 4);
    for (r = 0; r < rows; r++) {
      int four;
      __m512i xv;
      memcpy(&four, x + r * K + 4 * g, 4);
      xv = _mm512_set1_epi32(four ^ (int)0x80808080u); /* each byte + 128 */
      for (b = 0; b < blocks; b++) acc[r][b] = _mm512_dpbusd_epi32(acc[r][b], xv, wv[b]);
    }
  }
  if (K % 4) { /* the last, short group: its missing inputs meet zero weights */
    for (b = 0; b < blocks; b++) wv[b] = _mm512_loadu_si512(w + ((size_t)g * N + n0 + 16 * b) * 4);
    for (r = 0; r < rows; r++) {
      int four = 0;
      __m512i xv;
      memcpy(&four, x + r * K + 4 * g, K % 4);
      xv = _mm512_set1_epi32(four ^ (int)0x80808080u);
      for (b = 0; b < blocks; b++) acc[r][b] = _mm512_dpbusd_epi32(acc[r][b], xv, wv[b]);
    }
  }
  for (r = 0; r < rows; r++)
    for (b = 0; b < blocks; b++) _mm512_storeu_si512(out + r * N + n0 + 16 * b, acc[r][b]);
}

static inline __attribute__((always_inline)) void edgevit_gemm_s8_rows(
    int *restrict out, const signed char *restrict x, const signed char *restrict w, const int *restrict colsum,
    int K, int N, int rows) {
  int n0 = 0;
  for (; n0 + 64 <= N; n0 += 64) edgevit_gemm_s8_tile(out, x, w, colsum, K, N, n0, rows, 4);
  for (; n0 < N; n0 += 16) edgevit_gemm_s8_tile(out, x, w, colsum, K, N, n0, rows, 1);
}

/* N a multiple of 16 (the exporter checks) */
static inline __attribute__((always_inline)) void edgevit_gemm_s8(
    int *restrict out, const signed char *restrict x, const signed char *restrict w, const int *restrict colsum,
    int M, int K, int N) {
  int m = 0;
  for (; m + 4 <= M; m += 4) edgevit_gemm_s8_rows(out + m * N, x + m * K, w, colsum, K, N, 4);
  switch (M - m) {
    case 3: edgevit_gemm_s8_rows(out + m * N, x + m * K, w, colsum, K, N, 3); break;
    case 2: edgevit_gemm_s8_rows(out + m * N, x + m * K, w, colsum, K, N, 2); break;
    case 1: edgevit_gemm_s8_rows(out + m * N, x + m * K, w, colsum, K, N, 1); break;
    default: break;
  }
}

#elif defined(__ARM_FEATURE_DOTPROD) && defined(__ARM_NEON)
#include <arm_neon.h>
#define EDGEVIT_INT8_DOT "sdot (ARMv8.2 dotprod)"

/* sdot multiplies signed by signed bytes: no offset, colsum unused. 4 rows x 16 outputs at a time */
static void edgevit_gemm_s8(int *restrict out, const signed char *restrict x, const signed char *restrict w,
                            const int *restrict colsum, int M, int K, int N) {
  int m, n0, r, j, g;
  (void)colsum;
  for (m = 0; m < M; m += 4) {
    int rows = M - m < 4 ? M - m : 4;
    for (n0 = 0; n0 < N; n0 += 16) {
      int32x4_t acc[4][4];
      for (r = 0; r < 4; r++)
        for (j = 0; j < 4; j++) acc[r][j] = vdupq_n_s32(0);
      for (g = 0; g < (K + 3) / 4; g++) {
        const signed char *wg = w + ((g * N) + n0) * 4;
        int8x16_t w0 = vld1q_s8(wg), w1 = vld1q_s8(wg + 16), w2 = vld1q_s8(wg + 32), w3 = vld1q_s8(wg + 48);
        int lanes = K - 4 * g < 4 ? K - 4 * g : 4; /* a short last group meets zero weights */
        for (r = 0; r < rows; r++) {
          const signed char *xr = x + (m + r) * K + 4 * g;
          unsigned four = 0;
          int8x16_t xv;
          for (j = 0; j < lanes; j++) four |= (unsigned)(unsigned char)xr[j] << (8 * j);
          xv = vreinterpretq_s8_u32(vdupq_n_u32(four));
          acc[r][0] = vdotq_s32(acc[r][0], w0, xv);
          acc[r][1] = vdotq_s32(acc[r][1], w1, xv);
          acc[r][2] = vdotq_s32(acc[r][2], w2, xv);
          acc[r][3] = vdotq_s32(acc[r][3], w3, xv);
        }
      }
      for (r = 0; r < rows; r++)
        for (j = 0; j < 4; j++) vst1q_s32(out + (m + r) * N + n0 + 4 * j, acc[r][j]);
    }
  }
}

#else
#define EDGEVIT_INT8_DOT "plain C"

static void edgevit_gemm_s8(int *restrict out, const signed char *restrict x, const signed char *restrict w,
                            const int *restrict colsum, int M, int K, int N) {
  int m, n, g;
  (void)colsum;
  for (m = 0; m < M; m++) {
    int *restrict row = out + m * N;
    for (n = 0; n < N; n++) row[n] = 0;
    for (g = 0; g < (K + 3) / 4; g++) {
      const signed char *xg = x + m * K + 4 * g, *wg = w + g * N * 4;
      int lanes = K - 4 * g, x0 = xg[0], x1 = lanes > 1 ? xg[1] : 0, x2 = lanes > 2 ? xg[2] : 0, x3 = lanes > 3 ? xg[3] : 0;
      for (n = 0; n < N; n++) row[n] += x0 * wg[4 * n] + x1 * wg[4 * n + 1] + x2 * wg[4 * n + 2] + x3 * wg[4 * n + 3];
    }
  }
}
#endif
