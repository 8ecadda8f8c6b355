/* ---- int8 matrix products on the CPU's dot-product instructions ----
 *
 * out[m][n] = sum over k of x[m][k] * w[k][n], in int32: exact, so every path below gives the same
 * numbers as the tinygrad kernel it replaces. The weights were re-arranged at export as [K/4][N][4]
 * (K rounded up to a multiple of 4 with zero weights): the four inputs that feed one output sit side
 * by side in one 32-bit lane, which is the operand
 * x86's vpdpbusd (AVX512-VNNI) and ARM's sdot (ARMv8.2 dotprod) multiply and add in one instruction.
 * vpdpbusd multiplies unsigned by signed bytes, so there x goes in as x + 128 and 128 * colsum[n]
 * (colsum[n] = sum over k of w[k][n], exported with the weights) takes the excess back out. Where
 * the compiler targets AMX (Sapphire Rapids and later, -march=native there) and Linux grants the tile
 * state at run time, blocks of 16 rows go to tdpbssd instead. WebAssembly with SIMD widens to int16
 * for i32x4.dot_i16x8_s; other targets (Cortex-M, x86 without VNNI) run the same sum in plain C99.
 * edgevit_int8_path() names the path this process takes. Among the kernels below,
 * edgevit_gemm_s8_<M>x<K>x<N> are the exporter's: this function at one shape each.
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
static inline __attribute__((always_inline)) void edgevit_gemm_s8_vnni(
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

#if (defined(__AMX_INT8__) || defined(__AMXINT8__)) && (defined(__AMX_TILE__) || defined(__AMXTILE__)) && \
    defined(__linux__) && defined(__x86_64__) && !defined(EDGEVIT_NO_AMX)
#include <stdlib.h>

/* AMX: tdpbssd multiplies a tile of x (16 rows of 64 inputs) by a tile of w (16 rows of 64 bytes,
 * read as [16 groups of 4 inputs][16 outputs][4]: the packed order above, its rows N * 4 bytes apart)
 * into a tile of 16x16 int32 sums, 16,384 multiply-adds an instruction, signed by signed (no offset,
 * colsum unused), exact like the rest. Linux hands the 8 KiB of tile data only to a process that asks
 * (arch_prctl ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA), asked once here by a raw syscall (C99 has no
 * syscall()). Where it says no (before Linux 5.16, or a hypervisor that hides the state), or
 * EDGEVIT_INT8=vnni is set (to compare), every product stays on vpdpbusd. Blocks of 16 rows go to the
 * tiles (K a multiple of 4: every Linear here but the patch embedding, K 49); the rows left over, and
 * other shapes, go to vpdpbusd. */
#define EDGEVIT_ARCH_REQ_XCOMP_PERM 0x1023
#define EDGEVIT_XFEATURE_XTILEDATA 18
#define EDGEVIT_SYS_ARCH_PRCTL 158L /* x86-64 */
/* fewer rows stay on vpdpbusd: at one image (17 rows) the tiles made the whole forward pass 10% slower
 * (Xeon with AMX, 2026-12-06): every kernel around the products ran 10% slower while the tiles were in
 * use (the core's clock, by all signs), more than the products gained; at 16 images a call, faster */
#define EDGEVIT_AMX_MIN_ROWS 64

struct edgevit_tile_config {
  unsigned char palette, start_row, reserved[14];
  unsigned short bytes_per_row[16];
  unsigned char rows[16];
};

static int edgevit_amx_granted = -1; /* -1: not asked yet (asking twice is harmless) */

static int edgevit_amx_ready(void) {
  if (edgevit_amx_granted < 0) {
    const char *want = getenv("EDGEVIT_INT8");
    long refused = 1;
    if (!want || strcmp(want, "vnni") != 0)
      __asm__ volatile("syscall"
                       : "=a"(refused)
                       : "0"(EDGEVIT_SYS_ARCH_PRCTL), "D"((long)EDGEVIT_ARCH_REQ_XCOMP_PERM),
                         "S"((long)EDGEVIT_XFEATURE_XTILEDATA)
                       : "rcx", "r11", "memory");
    edgevit_amx_granted = refused == 0;
  }
  return edgevit_amx_granted;
}

const char *edgevit_int8_path(void) {
  return edgevit_amx_ready() ? "tdpbssd (AMX-INT8)" : EDGEVIT_INT8_DOT;
}

/* tiles 0-3: the sums of four blocks of 16 outputs; 4 and 6: x and w, 64 inputs at a time; 5 and 7:
 * the last K % 64 inputs, where K is not a multiple of 64 (144: fc2's). The configuration is per
 * thread and loading it clears the tiles: set once per call. */
static void edgevit_amx_configure(int K) {
  struct edgevit_tile_config config;
  int t, tail = K % 64 ? K % 64 : 64;
  memset(&config, 0, sizeof config);
  config.palette = 1;
  for (t = 0; t < 8; t++) {
    config.bytes_per_row[t] = (unsigned short)(t == 5 ? tail : 64);
    config.rows[t] = (unsigned char)(t == 7 ? tail / 4 : 16);
  }
  /* not gcc 12's _tile_loadconfig: its asm names 8 bytes of the 64 as read, so gcc drops the stores
   * of the rest and ldtilecfg faults on what is left on the stack */
  __asm__ volatile("ldtilecfg %0" : : "m"(config));
}

/* 16 rows, outputs n0 .. n0 + 16 * blocks - 1 (blocks 1 to 4) */
static inline __attribute__((always_inline)) void edgevit_amx_rows(
    int *restrict out, const signed char *restrict x, const signed char *restrict w, int K, int N, int n0, int blocks) {
  const size_t stride = (size_t)N * 4; /* bytes from one row of w (and of out) to the next */
  int k = 0;
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
#define EDGEVIT_AMX_STEP(xt, wt, from)                              \
  do {                                                              \
    const signed char *wk = w + (size_t)(from / 4) * stride + (size_t)n0 * 4; \
    _tile_loadd(xt, x + from, K);                                   \
    _tile_loadd(wt, wk, stride);                                    \
    _tile_dpbssd(0, xt, wt);                                        \
    if (blocks > 1) { _tile_loadd(wt, wk + 64, stride); _tile_dpbssd(1, xt, wt); }  \
    if (blocks > 2) { _tile_loadd(wt, wk + 128, stride); _tile_dpbssd(2, xt, wt); } \
    if (blocks > 3) { _tile_loadd(wt, wk + 192, stride); _tile_dpbssd(3, xt, wt); } \
  } while (0)
  for (; k + 64 <= K; k += 64) EDGEVIT_AMX_STEP(4, 6, k);
  if (k < K) EDGEVIT_AMX_STEP(5, 7, k);
#undef EDGEVIT_AMX_STEP
  _tile_stored(0, out + n0, stride);
  if (blocks > 1) _tile_stored(1, out + n0 + 16, stride);
  if (blocks > 2) _tile_stored(2, out + n0 + 32, stride);
  if (blocks > 3) _tile_stored(3, out + n0 + 48, stride);
}

static inline __attribute__((always_inline)) void edgevit_gemm_s8(
    int *restrict out, const signed char *restrict x, const signed char *restrict w, const int *restrict colsum,
    int M, int K, int N) {
  int m = 0, n0;
  if (M >= EDGEVIT_AMX_MIN_ROWS && K % 4 == 0 && edgevit_amx_ready()) {
    /* gcc's tile loads and stores are asm that names no memory: these barriers keep the writes of x
     * before them and the reads of out after them */
    __asm__ volatile("" : : : "memory");
    edgevit_amx_configure(K);
    for (; m + 16 <= M; m += 16) {
      for (n0 = 0; n0 + 64 <= N; n0 += 64) edgevit_amx_rows(out + (size_t)m * N, x + (size_t)m * K, w, K, N, n0, 4);
      if (n0 < N) edgevit_amx_rows(out + (size_t)m * N, x + (size_t)m * K, w, K, N, n0, (N - n0) / 16);
    }
    _tile_release(); /* so the kernel need not save the tiles at every switch */
    __asm__ volatile("" : : : "memory");
  }
  if (m < M) edgevit_gemm_s8_vnni(out + (size_t)m * N, x + (size_t)m * K, w, colsum, M - m, K, N);
}

#else
const char *edgevit_int8_path(void) { return EDGEVIT_INT8_DOT; }

static inline __attribute__((always_inline)) void edgevit_gemm_s8(
    int *restrict out, const signed char *restrict x, const signed char *restrict w, const int *restrict colsum,
    int M, int K, int N) {
  edgevit_gemm_s8_vnni(out, x, w, colsum, M, K, N);
}
#endif

#elif defined(__ARM_FEATURE_DOTPROD) && defined(__ARM_NEON)
#include <arm_neon.h>
#define EDGEVIT_INT8_DOT "sdot (ARMv8.2 dotprod)"
const char *edgevit_int8_path(void) { return EDGEVIT_INT8_DOT; }

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

#elif defined(__wasm_simd128__)
#include <wasm_simd128.h>
#define EDGEVIT_INT8_DOT "i32x4.dot_i16x8_s (WebAssembly SIMD)"
const char *edgevit_int8_path(void) { return EDGEVIT_INT8_DOT; }

/* WebAssembly's exact dot product multiplies int16s: i32x4.dot_i16x8_s adds two neighbouring products
 * into each int32 lane. 16 bytes of packed w (4 outputs x 4 inputs) widen to two i16x8 of 2 outputs
 * each; against x's 4 inputs twice over, each lane holds half of one output's sum, and the halves are
 * added once, at the end. (Relaxed SIMD's i32x4.relaxed_dot_i8x16_i7x16_add_s takes one operand as
 * 7-bit: the 8-bit weights or activations would lose exactness, so it is not used.) 2 rows x 8 outputs
 * at a time: 8 accumulators, within the 16 vector registers V8 has on x86-64. */
static void edgevit_gemm_s8(int *restrict out, const signed char *restrict x, const signed char *restrict w,
                            const int *restrict colsum, int M, int K, int N) {
  int m, n0, r, j, g;
  (void)colsum;
  for (m = 0; m < M; m += 2) {
    int rows = M - m < 2 ? M - m : 2;
    for (n0 = 0; n0 < N; n0 += 8) {
      v128_t acc[2][4]; /* [row][outputs 0-1, 2-3, 4-5, 6-7]: two lanes each */
      for (r = 0; r < 2; r++)
        for (j = 0; j < 4; j++) acc[r][j] = wasm_i32x4_splat(0);
      for (g = 0; g < (K + 3) / 4; g++) {
        const signed char *wg = w + ((size_t)g * N + n0) * 4;
        v128_t w0 = wasm_v128_load(wg), w1 = wasm_v128_load(wg + 16), wide[4];
        int lanes = K - 4 * g < 4 ? K - 4 * g : 4; /* a short last group meets zero weights */
        wide[0] = wasm_i16x8_extend_low_i8x16(w0);
        wide[1] = wasm_i16x8_extend_high_i8x16(w0);
        wide[2] = wasm_i16x8_extend_low_i8x16(w1);
        wide[3] = wasm_i16x8_extend_high_i8x16(w1);
        for (r = 0; r < rows; r++) {
          const signed char *xr = x + (size_t)(m + r) * K + 4 * g;
          short x0 = xr[0], x1 = lanes > 1 ? xr[1] : 0, x2 = lanes > 2 ? xr[2] : 0, x3 = lanes > 3 ? xr[3] : 0;
          v128_t xv = wasm_i16x8_make(x0, x1, x2, x3, x0, x1, x2, x3);
          for (j = 0; j < 4; j++) acc[r][j] = wasm_i32x4_add(acc[r][j], wasm_i32x4_dot_i16x8(wide[j], xv));
        }
      }
      for (r = 0; r < rows; r++)
        for (j = 0; j < 4; j += 2) {
          v128_t even = wasm_i32x4_shuffle(acc[r][j], acc[r][j + 1], 0, 2, 4, 6);
          v128_t odd = wasm_i32x4_shuffle(acc[r][j], acc[r][j + 1], 1, 3, 5, 7);
          wasm_v128_store(out + (size_t)(m + r) * N + n0 + 2 * j, wasm_i32x4_add(even, odd));
        }
    }
  }
}

#else
#define EDGEVIT_INT8_DOT "plain C"
const char *edgevit_int8_path(void) { return EDGEVIT_INT8_DOT; }

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
