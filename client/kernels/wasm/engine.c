/*
 * subfed's native training engine: the kernels of the model zoo's layers (valid
 * stride-1 convolutions, BatchNorm, 2x2 max pooling, ReLU, dense layers, softmax
 * cross-entropy, SGD with momentum), in C for wasm32 + SIMD128.
 *
 * Built by `npm run build:wasm` (clang --target=wasm32, see build.sh) into
 * engine.wasm, which ships in the package. client/kernels/engine/ drives these
 * kernels: it owns the memory layout (every pointer here is an offset into the
 * module's own memory, handed in by TypeScript), so this file has no allocator
 * and no state except the tile table.
 *
 * Layout: NHWC activations whose channel count is padded to a multiple of 4 (C4);
 * padded channels hold zeros. Weights as [rows][cols padded to 4].
 *
 * The two matrix kernels take "offset tables" so that one inner loop serves
 * convolutions without an im2col copy and dense layers alike:
 *   gemm_rows: C[crow[i] + coff + j] (=|+=) init[j] + sum_p A[arow[i] + poff[p]] * B[p*ldb + j]
 *   gemm_taps: C[p*ldc + j]          (=|+=)           sum_i A[arow[i] + poff[p]] * B[i*ldb + j]
 * For a convolution, arow[i] is the input offset of output pixel i's window and
 * poff[p] the offset of tap p = (kh, kw, ci) inside it: gemm_rows is the forward
 * pass (B = kernel), gemm_taps the kernel gradient (B = output gradient).
 */
#include <stdint.h>
#include <wasm_simd128.h>

#define EXPORT(name) __attribute__((export_name(#name)))
#define UNROLL _Pragma("clang loop unroll(full)")

typedef v128_t V;

__attribute__((import_module("env"), import_name("exp"))) double js_exp(double);
__attribute__((import_module("env"), import_name("log"))) double js_log(double);

static inline V ld(const float *p) { return wasm_v128_load(p); }
static inline void st(float *p, V v) { wasm_v128_store(p, v); }
static inline V splat(const float *p) { return wasm_v128_load32_splat(p); }
static inline V zero(void) { return wasm_f32x4_splat(0.0f); }
#define ADD wasm_f32x4_add
#define SUB wasm_f32x4_sub
#define MUL wasm_f32x4_mul

/* ------------------------------------------------------------------ gemm_rows */

typedef void (*rows_fn)(const float *A, const int *arow, const int *poff, int P, const float *B, int ldb, float *C,
                        const int *crow, int coff, const float *init, int accumulate);

#define ROWS_TILE(R, NV)                                                                                              \
  static void rows_##R##_##NV(const float *A, const int *arow, const int *poff, int P, const float *B, int ldb,       \
                              float *C, const int *crow, int coff, const float *init, int accumulate) {              \
    const float *a[R];                                                                                                \
    V acc[R][NV];                                                                                                     \
    UNROLL for (int r = 0; r < R; r++) a[r] = A + arow[r];                                                           \
    UNROLL for (int v = 0; v < NV; v++) {                                                                             \
      V i0 = init ? ld(init + 4 * v) : zero();                                                                        \
      UNROLL for (int r = 0; r < R; r++) acc[r][v] = i0;                                                              \
    }                                                                                                                 \
    for (int p = 0; p < P; p++) {                                                                                     \
      const int o = poff[p];                                                                                          \
      const float *b = B + p * ldb;                                                                                   \
      if (NV > R) {                                                                                                   \
        V s[R];                                                                                                       \
        UNROLL for (int r = 0; r < R; r++) s[r] = splat(a[r] + o);                                                    \
        UNROLL for (int v = 0; v < NV; v++) {                                                                         \
          V bv = ld(b + 4 * v);                                                                                       \
          UNROLL for (int r = 0; r < R; r++) acc[r][v] = ADD(acc[r][v], MUL(s[r], bv));                              \
        }                                                                                                             \
      } else {                                                                                                        \
        V bv[NV];                                                                                                     \
        UNROLL for (int v = 0; v < NV; v++) bv[v] = ld(b + 4 * v);                                                    \
        UNROLL for (int r = 0; r < R; r++) {                                                                          \
          V s = splat(a[r] + o);                                                                                      \
          UNROLL for (int v = 0; v < NV; v++) acc[r][v] = ADD(acc[r][v], MUL(s, bv[v]));                             \
        }                                                                                                             \
      }                                                                                                               \
    }                                                                                                                 \
    UNROLL for (int r = 0; r < R; r++) {                                                                              \
      float *c = C + crow[r] + coff;                                                                                  \
      UNROLL for (int v = 0; v < NV; v++) {                                                                           \
        V x = acc[r][v];                                                                                              \
        if (accumulate) x = ADD(ld(c + 4 * v), x);                                                                    \
        st(c + 4 * v, x);                                                                                             \
      }                                                                                                               \
    }                                                                                                                 \
  }

#define ROWS_FOR_NV(NV)                                                                                               \
  ROWS_TILE(1, NV) ROWS_TILE(2, NV) ROWS_TILE(3, NV) ROWS_TILE(4, NV) ROWS_TILE(5, NV) ROWS_TILE(6, NV)              \
      ROWS_TILE(7, NV) ROWS_TILE(8, NV)
ROWS_FOR_NV(1)
ROWS_FOR_NV(2)
ROWS_FOR_NV(3)
ROWS_FOR_NV(4)
ROWS_FOR_NV(5)

#define ROWS_ROW(NV)                                                                                                  \
  { 0, rows_1_##NV, rows_2_##NV, rows_3_##NV, rows_4_##NV, rows_5_##NV, rows_6_##NV, rows_7_##NV, rows_8_##NV }
static const rows_fn ROWS[6][9] = {{0}, ROWS_ROW(1), ROWS_ROW(2), ROWS_ROW(3), ROWS_ROW(4), ROWS_ROW(5)};

/* ------------------------------------------------------------------ gemm_taps */

typedef void (*taps_fn)(const float *A, const int *arow, const int *poff, const float *B, int ldb, float *C, int ldc,
                        int accumulate, int rows);

#define TAPS_TILE(R, NV)                                                                                              \
  static void taps_##R##_##NV(const float *A, const int *arow, const int *poff, const float *B, int ldb, float *C,    \
                              int ldc, int accumulate, int rows) {                                                   \
    int o[R];                                                                                                         \
    V acc[R][NV];                                                                                                     \
    UNROLL for (int r = 0; r < R; r++) {                                                                              \
      o[r] = poff[r];                                                                                                 \
      UNROLL for (int v = 0; v < NV; v++) acc[r][v] = zero();                                                         \
    }                                                                                                                 \
    for (int i = 0; i < rows; i++) {                                                                                  \
      const float *a = A + arow[i];                                                                                   \
      const float *b = B + i * ldb;                                                                                   \
      if (NV > R) {                                                                                                   \
        V s[R];                                                                                                       \
        UNROLL for (int r = 0; r < R; r++) s[r] = splat(a + o[r]);                                                    \
        UNROLL for (int v = 0; v < NV; v++) {                                                                         \
          V bv = ld(b + 4 * v);                                                                                       \
          UNROLL for (int r = 0; r < R; r++) acc[r][v] = ADD(acc[r][v], MUL(s[r], bv));                              \
        }                                                                                                             \
      } else {                                                                                                        \
        V bv[NV];                                                                                                     \
        UNROLL for (int v = 0; v < NV; v++) bv[v] = ld(b + 4 * v);                                                    \
        UNROLL for (int r = 0; r < R; r++) {                                                                          \
          V s = splat(a + o[r]);                                                                                      \
          UNROLL for (int v = 0; v < NV; v++) acc[r][v] = ADD(acc[r][v], MUL(s, bv[v]));                             \
        }                                                                                                             \
      }                                                                                                               \
    }                                                                                                                 \
    UNROLL for (int r = 0; r < R; r++) {                                                                              \
      float *c = C + r * ldc;                                                                                         \
      UNROLL for (int v = 0; v < NV; v++) {                                                                           \
        V x = acc[r][v];                                                                                              \
        if (accumulate) x = ADD(ld(c + 4 * v), x);                                                                    \
        st(c + 4 * v, x);                                                                                             \
      }                                                                                                               \
    }                                                                                                                 \
  }

#define TAPS_FOR_NV(NV)                                                                                               \
  TAPS_TILE(1, NV) TAPS_TILE(2, NV) TAPS_TILE(3, NV) TAPS_TILE(4, NV) TAPS_TILE(5, NV) TAPS_TILE(6, NV)              \
      TAPS_TILE(7, NV) TAPS_TILE(8, NV)
TAPS_FOR_NV(1)
TAPS_FOR_NV(2)
TAPS_FOR_NV(3)
TAPS_FOR_NV(4)
TAPS_FOR_NV(5)

#define TAPS_ROW(NV)                                                                                                  \
  { 0, taps_1_##NV, taps_2_##NV, taps_3_##NV, taps_4_##NV, taps_5_##NV, taps_6_##NV, taps_7_##NV, taps_8_##NV }
static const taps_fn TAPS[6][9] = {{0}, TAPS_ROW(1), TAPS_ROW(2), TAPS_ROW(3), TAPS_ROW(4), TAPS_ROW(5)};

/* Tile choice: the column block (vectors) for a given number of remaining column
 * vectors, and the rows (or taps) per tile for a column block width. V8 (TurboFan,
 * x64) allocates 15 xmm registers; a tile whose accumulators, column vectors, splat
 * and product do not fit spills accumulators through the stack inside the loop-carried
 * chain, which costs ~40%. Settable for tuning (set_tiles); the defaults were measured
 * with gemm_rows and gemm_taps on the zoo's conv shapes (best of 60 runs, batch 16). */
static int BLOCK[6] = {0, 1, 2, 3, 4, 3};
static int ROWS_R[6] = {0, 8, 4, 3, 2, 2};
static int TAPS_R[6] = {0, 6, 4, 2, 2, 2};

EXPORT(set_tiles) void set_tiles(int nv, int block, int rows_r, int taps_r) {
  if (nv < 1 || nv > 5) return;
  if (block >= 1 && block <= nv) BLOCK[nv] = block;
  if (rows_r >= 1 && rows_r <= 8) ROWS_R[nv] = rows_r;
  if (taps_r >= 1 && taps_r <= 8) TAPS_R[nv] = taps_r;
}

static int block_of(int remaining) { return remaining >= 5 ? BLOCK[5] : BLOCK[remaining]; }

EXPORT(gemm_rows)
void gemm_rows(const float *A, const int *arow, const int *poff, int P, const float *B, int ldb, float *C,
               const int *crow, int coff, const float *init, int accumulate, int rows, int J4) {
  for (int j = 0; j < J4;) {
    const int nv = block_of(J4 - j);
    const int rmax = ROWS_R[nv];
    const float *bj = B + 4 * j;
    const float *ij = init ? init + 4 * j : 0;
    const int cj = coff + 4 * j;
    int i = 0;
    for (; i + rmax <= rows; i += rmax) ROWS[nv][rmax](A, arow + i, poff, P, bj, ldb, C, crow + i, cj, ij, accumulate);
    if (i < rows) ROWS[nv][rows - i](A, arow + i, poff, P, bj, ldb, C, crow + i, cj, ij, accumulate);
    j += nv;
  }
}

EXPORT(gemm_taps)
void gemm_taps(const float *A, const int *arow, const int *poff, int P, const float *B, int ldb, float *C, int ldc,
               int accumulate, int rows, int J4) {
  for (int j = 0; j < J4;) {
    const int nv = block_of(J4 - j);
    const int rmax = TAPS_R[nv];
    const float *bj = B + 4 * j;
    int p = 0;
    for (; p + rmax <= P; p += rmax) TAPS[nv][rmax](A, arow, poff + p, bj, ldb, C + p * ldc + 4 * j, ldc, accumulate, rows);
    if (p < P) TAPS[nv][P - p](A, arow, poff + p, bj, ldb, C + p * ldc + 4 * j, ldc, accumulate, rows);
    j += nv;
  }
}

/* ---------------------------------------------------------- convolution helpers */

/* The input gradient of a convolution, scattered tap by tap:
 *   dx[xrow[n] + toff[t] + ci] += sum_m dy[n*ldy + m] * wt[(t*M + m)*C4 + ci]
 * with wt the kernel transposed per tap (conv_transpose_kernel). dx is zeroed first. */
EXPORT(conv_input_grad)
void conv_input_grad(const float *dy, const int *dyrow, const int *ident, int M, const float *wt, int C4, int T,
                     const int *toff, float *dx, int dxSize, const int *xrow, int rows) {
  __builtin_memset(dx, 0, (unsigned)dxSize * sizeof(float));
  for (int t = 0; t < T; t++) gemm_rows(dy, dyrow, ident, M, wt + t * M * C4, C4, dx, xrow, toff[t], 0, 1, rows, C4 / 4);
}

/* w[(t*C + ci)*ldw + m] -> wt[(t*M + m)*C4 + ci], zero for ci >= C. */
EXPORT(conv_transpose_kernel)
void conv_transpose_kernel(const float *w, int T, int C, int M, int ldw, float *wt, int C4) {
  for (int t = 0; t < T; t++)
    for (int m = 0; m < M; m++) {
      float *dst = wt + (t * M + m) * C4;
      for (int ci = 0; ci < C4; ci++) dst[ci] = ci < C ? w[(t * C + ci) * ldw + m] : 0.0f;
    }
}

/* w[i*ldw + j] (rows x cols) -> wt[j*ldt + rowmap[i]]; every other entry of wt (cols x ldt) is zero. */
EXPORT(transpose_map)
void transpose_map(const float *w, int rows, int cols, int ldw, const int *rowmap, float *wt, int ldt) {
  __builtin_memset(wt, 0, (unsigned)(cols * ldt) * sizeof(float));
  for (int i = 0; i < rows; i++) {
    const float *src = w + i * ldw;
    const int at = rowmap[i];
    for (int j = 0; j < cols; j++) wt[j * ldt + at] = src[j];
  }
}

/* ---------------------------------------------------------- pooling, BatchNorm */

static inline V first_max4(V v0, V v1, V v2, V v3, V *idx) {
  V best = v0;
  V at = wasm_i32x4_splat(0);
  V m = wasm_f32x4_gt(v1, best);
  best = wasm_v128_bitselect(v1, best, m);
  at = wasm_v128_bitselect(wasm_i32x4_splat(1), at, m);
  m = wasm_f32x4_gt(v2, best);
  best = wasm_v128_bitselect(v2, best, m);
  at = wasm_v128_bitselect(wasm_i32x4_splat(2), at, m);
  m = wasm_f32x4_gt(v3, best);
  best = wasm_v128_bitselect(v3, best, m);
  at = wasm_v128_bitselect(wasm_i32x4_splat(3), at, m);
  *idx = at;
  return best;
}

static inline V relu(V x) { return wasm_f32x4_max(x, zero()); }

/* a = relu(maxpool2x2(z) + bias); arg (nullable) = which window entry won (0..3, row-major, first maximum). */
EXPORT(pool_bias_relu)
void pool_bias_relu(const float *z, int B, int H, int W, int C4, const float *bias, float *a, int *arg) {
  const int PH = H / 2, PW = W / 2, row = W * C4;
  float *out = a;
  int *ao = arg;
  for (int b = 0; b < B; b++)
    for (int ph = 0; ph < PH; ph++)
      for (int pw = 0; pw < PW; pw++) {
        const float *base = z + ((b * H + 2 * ph) * W + 2 * pw) * C4;
        for (int c = 0; c < C4; c += 4) {
          V idx;
          V best = first_max4(ld(base + c), ld(base + C4 + c), ld(base + row + c), ld(base + row + C4 + c), &idx);
          st(out + c, relu(ADD(best, ld(bias + c))));
          if (ao) wasm_v128_store(ao + c, idx);
        }
        out += C4;
        if (ao) ao += C4;
      }
}

/* Backward of pool_bias_relu: g = da * (a > 0) goes to the window entry that won; dbias = sum of g. */
EXPORT(pool_bias_relu_grad)
void pool_bias_relu_grad(const float *da, const float *a, const int *arg, int B, int H, int W, int C4, float *dz,
                         float *dbias) {
  const int PH = H / 2, PW = W / 2, row = W * C4;
  for (int c = 0; c < C4; c += 4) st(dbias + c, zero());
  int o = 0;
  for (int b = 0; b < B; b++)
    for (int ph = 0; ph < PH; ph++)
      for (int pw = 0; pw < PW; pw++, o += C4) {
        float *base = dz + ((b * H + 2 * ph) * W + 2 * pw) * C4;
        for (int c = 0; c < C4; c += 4) {
          V g = wasm_v128_and(ld(da + o + c), wasm_f32x4_gt(ld(a + o + c), zero()));
          V idx = wasm_v128_load(arg + o + c);
          st(base + c, wasm_v128_and(g, wasm_i32x4_eq(idx, wasm_i32x4_splat(0))));
          st(base + C4 + c, wasm_v128_and(g, wasm_i32x4_eq(idx, wasm_i32x4_splat(1))));
          st(base + row + c, wasm_v128_and(g, wasm_i32x4_eq(idx, wasm_i32x4_splat(2))));
          st(base + row + C4 + c, wasm_v128_and(g, wasm_i32x4_eq(idx, wasm_i32x4_splat(3))));
          st(dbias + c, ADD(ld(dbias + c), g));
        }
      }
}

/* Per-channel mean and biased variance of z [N, C4] (two passes, partial sums per block of rows). */
EXPORT(bn_stats)
void bn_stats(const float *z, int N, int C4, float *mean, float *var) {
  const float inv = 1.0f / (float)N;
  for (int c = 0; c < C4; c += 4) {
    V total = zero();
    for (int n0 = 0; n0 < N; n0 += 64) {
      V part = zero();
      const int n1 = n0 + 64 < N ? n0 + 64 : N;
      for (int n = n0; n < n1; n++) part = ADD(part, ld(z + n * C4 + c));
      total = ADD(total, part);
    }
    V m = MUL(total, wasm_f32x4_splat(inv));
    st(mean + c, m);
    total = zero();
    for (int n0 = 0; n0 < N; n0 += 64) {
      V part = zero();
      const int n1 = n0 + 64 < N ? n0 + 64 : N;
      for (int n = n0; n < n1; n++) {
        V d = SUB(ld(z + n * C4 + c), m);
        part = ADD(part, MUL(d, d));
      }
      total = ADD(total, part);
    }
    st(var + c, MUL(total, wasm_f32x4_splat(inv)));
  }
}

/* invstd = 1 / sqrt(var + eps) */
EXPORT(bn_invstd)
void bn_invstd(const float *var, float eps, float *invstd, int C4) {
  for (int c = 0; c < C4; c += 4) st(invstd + c, wasm_f32x4_div(wasm_f32x4_splat(1.0f), wasm_f32x4_sqrt(ADD(ld(var + c), wasm_f32x4_splat(eps)))));
}

/* running = running*(1-momentum) + batch*momentum; the variance enters unbiased (times unbias). */
EXPORT(bn_running)
void bn_running(float *rmean, float *rvar, const float *mean, const float *var, int C, float keep, float momentum,
                float unbias) {
  for (int c = 0; c < C; c++) {
    rmean[c] = rmean[c] * keep + mean[c] * momentum;
    rvar[c] = rvar[c] * keep + (var[c] * unbias) * momentum;
  }
}

static inline V bn_affine(V z, V mean, V invstd, V gamma, V beta) { return ADD(MUL(MUL(SUB(z, mean), invstd), gamma), beta); }

/* a = relu(maxpool2x2(BN(z))), BN(z) = ((z - mean) * invstd) * gamma + beta; arg as in pool_bias_relu. */
EXPORT(bn_pool_relu)
void bn_pool_relu(const float *z, int B, int H, int W, int C4, const float *mean, const float *invstd, const float *gamma,
                  const float *beta, float *a, int *arg) {
  const int PH = H / 2, PW = W / 2, row = W * C4;
  float *out = a;
  int *ao = arg;
  for (int b = 0; b < B; b++)
    for (int ph = 0; ph < PH; ph++)
      for (int pw = 0; pw < PW; pw++) {
        const float *base = z + ((b * H + 2 * ph) * W + 2 * pw) * C4;
        for (int c = 0; c < C4; c += 4) {
          const V m = ld(mean + c), s = ld(invstd + c), g = ld(gamma + c), bt = ld(beta + c);
          V idx;
          V best = first_max4(bn_affine(ld(base + c), m, s, g, bt), bn_affine(ld(base + C4 + c), m, s, g, bt),
                              bn_affine(ld(base + row + c), m, s, g, bt), bn_affine(ld(base + row + C4 + c), m, s, g, bt),
                              &idx);
          st(out + c, relu(best));
          if (ao) wasm_v128_store(ao + c, idx);
        }
        out += C4;
        if (ao) ao += C4;
      }
}

/*
 * Backward of bn_pool_relu with batch statistics. g = da * (a > 0) reaches the winning
 * window entry (dy there, zero elsewhere), then
 *   dbeta = sum dy, dgamma = sum dy * zhat,
 *   dz = gamma * invstd * (dy - dbeta/N - zhat * dgamma/N),  dbias = sum dz.
 */
EXPORT(bn_pool_relu_grad)
void bn_pool_relu_grad(const float *da, const float *a, const int *arg, const float *z, int B, int H, int W, int C4,
                       const float *mean, const float *invstd, const float *gamma, float *dz, float *dgamma, float *dbeta,
                       float *dbias) {
  const int PH = H / 2, PW = W / 2, row = W * C4;
  const int offs[4] = {0, C4, row, row + C4};
  const float invN = 1.0f / (float)(B * H * W);
  for (int c = 0; c < C4; c += 4) {
    st(dgamma + c, zero());
    st(dbeta + c, zero());
    st(dbias + c, zero());
  }
  /* pass 1: the sums over the winners */
  int o = 0;
  for (int b = 0; b < B; b++)
    for (int ph = 0; ph < PH; ph++)
      for (int pw = 0; pw < PW; pw++, o += C4) {
        const float *base = z + ((b * H + 2 * ph) * W + 2 * pw) * C4;
        for (int c = 0; c < C4; c += 4) {
          V g = wasm_v128_and(ld(da + o + c), wasm_f32x4_gt(ld(a + o + c), zero()));
          V idx = wasm_v128_load(arg + o + c);
          V zsel = ld(base + c);
          zsel = wasm_v128_bitselect(ld(base + C4 + c), zsel, wasm_i32x4_eq(idx, wasm_i32x4_splat(1)));
          zsel = wasm_v128_bitselect(ld(base + row + c), zsel, wasm_i32x4_eq(idx, wasm_i32x4_splat(2)));
          zsel = wasm_v128_bitselect(ld(base + row + C4 + c), zsel, wasm_i32x4_eq(idx, wasm_i32x4_splat(3)));
          V zhat = MUL(SUB(zsel, ld(mean + c)), ld(invstd + c));
          st(dbeta + c, ADD(ld(dbeta + c), g));
          st(dgamma + c, ADD(ld(dgamma + c), MUL(g, zhat)));
        }
      }
  /* pass 2: dz everywhere */
  o = 0;
  for (int b = 0; b < B; b++)
    for (int ph = 0; ph < PH; ph++)
      for (int pw = 0; pw < PW; pw++, o += C4) {
        const int zb = ((b * H + 2 * ph) * W + 2 * pw) * C4;
        for (int c = 0; c < C4; c += 4) {
          const V m = ld(mean + c), s = ld(invstd + c);
          const V k = MUL(ld(gamma + c), s);
          const V sb = MUL(ld(dbeta + c), wasm_f32x4_splat(invN));
          const V sg = MUL(ld(dgamma + c), wasm_f32x4_splat(invN));
          V g = wasm_v128_and(ld(da + o + c), wasm_f32x4_gt(ld(a + o + c), zero()));
          V idx = wasm_v128_load(arg + o + c);
          V sum = ld(dbias + c);
          for (int e = 0; e < 4; e++) {
            const int at = zb + offs[e] + c;
            V dy = wasm_v128_and(g, wasm_i32x4_eq(idx, wasm_i32x4_splat(e)));
            V zhat = MUL(SUB(ld(z + at), m), s);
            V d = MUL(k, SUB(SUB(dy, sb), MUL(zhat, sg)));
            st(dz + at, d);
            sum = ADD(sum, d);
          }
          st(dbias + c, sum);
        }
      }
}

/* ---------------------------------------------------------- dense helpers */

EXPORT(relu_inplace) void relu_inplace(float *x, int n) {
  for (int i = 0; i < n; i += 4) st(x + i, relu(ld(x + i)));
}

/* dy *= (y > 0) */
EXPORT(relu_grad) void relu_grad(float *dy, const float *y, int n) {
  for (int i = 0; i < n; i += 4) st(dy + i, wasm_v128_and(ld(dy + i), wasm_f32x4_gt(ld(y + i), zero())));
}

/* out[j] = sum over r of x[r*ld + j], j < 4*J4 */
EXPORT(colsum) void colsum(const float *x, int rows, int ldx, int J4, float *out) {
  for (int j = 0; j < 4 * J4; j += 4) {
    V s = zero();
    for (int r = 0; r < rows; r++) s = ADD(s, ld(x + r * ldx + j));
    st(out + j, s);
  }
}

/* ---------------------------------------------------------- loss, optimiser, input */

/*
 * Softmax cross-entropy of logits [rows][ld] (the first `classes` columns) against labels,
 * in double like client/train.ts's crossEntropyWithStats: out[0] += sum of row losses,
 * out[1] += rows whose first maximum is the label. dlogits (nullable) = (softmax - onehot)/rows;
 * per_row (nullable) = [loss, correct] per row.
 */
EXPORT(softmax_ce)
void softmax_ce(const float *logits, int ldl, int rows, int classes, const int *labels, float *dlogits, double *out,
                double *per_row) {
  double lossSum = 0;
  int correct = 0;
  for (int r = 0; r < rows; r++) {
    const float *v = logits + r * ldl;
    int best = 0;
    for (int c = 1; c < classes; c++)
      if (v[c] > v[best]) best = c;
    const int label = labels[r];
    if (best == label) correct++;
    const double max = v[best];
    double denominator = 0;
    float *g = dlogits ? dlogits + r * ldl : 0;
    for (int c = 0; c < classes; c++) {
      const double e = js_exp((double)v[c] - max);
      if (g) g[c] = (float)e;
      denominator += e;
    }
    const double loss = js_log(denominator) - ((double)v[label] - max);
    lossSum += loss;
    if (per_row) {
      per_row[2 * r] = loss;
      per_row[2 * r + 1] = best == label;
    }
    if (g) {
      for (int c = 0; c < classes; c++) g[c] = (float)(((double)g[c] / denominator - (c == label ? 1.0 : 0.0)) / rows);
      for (int c = classes; c < ldl; c++) g[c] = 0.0f;
    }
  }
  out[0] += lossSum;
  out[1] += correct;
}

/*
 * One SGD-with-momentum step over n values (n a multiple of 4), after the gradient rule
 * of client/train.ts: g' = (g + l1*sign(w)) * mask (l1 = 0: no penalty; mask nullable).
 *   buf = momentum*buf + g';  w -= lr*buf   (float32 per operation)
 */
EXPORT(sgd_step)
void sgd_step(float *w, float *buf, const float *g, const float *mask, int n, float lr, float momentum, float l1) {
  const V vl = wasm_f32x4_splat(lr), vm = wasm_f32x4_splat(momentum), vs = wasm_f32x4_splat(l1);
  const V one = wasm_f32x4_splat(1.0f), minus = wasm_f32x4_splat(-1.0f);
  for (int i = 0; i < n; i += 4) {
    V wi = ld(w + i);
    V gi = ld(g + i);
    if (l1 != 0.0f) {
      V sign = wasm_v128_or(wasm_v128_and(one, wasm_f32x4_gt(wi, zero())), wasm_v128_and(minus, wasm_f32x4_lt(wi, zero())));
      gi = ADD(gi, MUL(sign, vs));
    }
    if (mask) gi = MUL(gi, ld(mask + i));
    V b = ADD(MUL(vm, ld(buf + i)), gi);
    st(buf + i, b);
    st(w + i, SUB(wi, MUL(vl, b)));
  }
}

/* dst[i*size + p] = table[(p % channels)*256 + src[i*size + p]] for `count` images of `size` bytes. */
EXPORT(normalize_u8)
void normalize_u8(const uint8_t *src, int count, int size, int channels, const float *table, float *dst) {
  const int n = count * size;
  if (channels == 1) {
    for (int i = 0; i < n; i++) dst[i] = table[src[i]];
  } else {
    for (int i = 0; i < n; i += channels)
      for (int c = 0; c < channels; c++) dst[i + c] = table[c * 256 + src[i + c]];
  }
}
