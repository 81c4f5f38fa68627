// The one summation order every code path follows, written once over a 16-lane vector type `V`
// that each ISA's translation unit defines (kernel_avx512.cpp, kernel_avx2.cpp, kernel_scalar.cpp).
//
// y[r, m] = sum_k x[r, k] * w[m, k], with w dequantized exactly (Q4_1: d*q + m, Q8_0: d*q; d*q is exact
// in float32). Lane j of one accumulator takes k = j, j + 16, j + 32, ... in increasing order, each
// step one fused multiply-add; the 16 lanes are then added in a fixed tree (j + j+8, + j+4, + j+2,
// + j+1). Every output element gets exactly this sequence of roundings whatever the number of rows,
// the tile it falls in, the columns beside it or the thread that computes it: batch invariance by
// construction, and the same bits on AVX-512, AVX2 and the scalar path.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace q4 {

constexpr int BLOCK = 32;
constexpr int Q4_1_BYTES = 20;  // f16 d, f16 m, 16 bytes of nibbles
constexpr int Q8_0_BYTES = 34;  // f16 d, 32 int8
enum Kind { KIND_Q4_1 = 0, KIND_Q8_0 = 1 };

constexpr int64_t block_bytes(int kind) { return kind == KIND_Q4_1 ? Q4_1_BYTES : Q8_0_BYTES; }

struct Problem {
  const float* x;   // [n, k] row-major
  const uint8_t* w; // [m, k / 32 * block bytes]
  float* y;         // [n, m] row-major
  int64_t n, k, m;
  int kind;
};

template <class V, int KIND>
inline void dequant(const uint8_t* blk, V& lo, V& hi) {
  if (KIND == KIND_Q4_1) V::q4_1(blk, lo, hi); else V::q8_0(blk, lo, hi);
}

// out[k] = w[c, k] for every k of column c, in float32: the column scratch's and the prompt panel's.
template <class V, int KIND>
inline void dequantize_column(const Problem& p, int64_t c, float* out) {
  constexpr int64_t BB = block_bytes(KIND);
  const int64_t nb = p.k / BLOCK;
  const uint8_t* col = p.w + c * nb * BB;
  for (int64_t b = 0; b < nb; ++b) {
    V lo, hi;
    dequant<V, KIND>(col + b * BB, lo, hi);
    V::store(out + b * BLOCK, lo);
    V::store(out + b * BLOCK + 16, hi);
  }
}

// How far ahead a tile prefetches: at least two tiles and 4 KB (a narrow 4x1 AVX2 tile spans 360 bytes).
constexpr int64_t AHEAD_TILES = 2, AHEAD_BYTES = 4096;

// R rows x C columns, all blocks: the weights of a block are dequantized once for the R rows.
template <class V, int KIND, int R, int C>
inline void tile(const Problem& p, int64_t r0, int64_t c0) {
  constexpr int64_t BB = block_bytes(KIND);
  const int64_t nb = p.k / BLOCK, row_bytes = nb * BB;
  V acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = V::zero();
  // The weights a few tiles on, a share of their cache lines each block: a decode step streams every
  // weight from memory once, and the hardware prefetcher alone kept it at about half the read rate
  // (SmolLM2's decode step at one row, two threads, 11.6 -> 9.1 ms).
  const int64_t tile_bytes = C * row_bytes;
  const int64_t ahead_col = c0 + C * std::max(AHEAD_TILES, (AHEAD_BYTES + tile_bytes - 1) / tile_bytes);
  const uint8_t* ahead = p.w + ahead_col * row_bytes;
  const int64_t ahead_bytes = ahead_col + C <= p.m ? tile_bytes : 0, per_block = (ahead_bytes / nb + 63) / 64 * 64;
  for (int64_t b = 0; b < nb; ++b) {
    for (int64_t off = b * per_block; off < (b + 1) * per_block && off < ahead_bytes; off += 64) __builtin_prefetch(ahead + off);
    if constexpr (V::FEW_REGISTERS) {
      // Each column's weights just before its multiply-adds: C columns' dequantized weights beside the
      // accumulators overflow 16 ymm registers, and the spills cost AVX2's one-row step ~10% (issue 17).
      for (int c = 0; c < C; ++c) {
        V lo, hi;
        dequant<V, KIND>(p.w + (c0 + c) * row_bytes + b * BB, lo, hi);
        for (int r = 0; r < R; ++r) {
          const float* xr = p.x + (r0 + r) * p.k + b * BLOCK;
          acc[r][c] = V::fma(V::load(xr), lo, acc[r][c]);
          acc[r][c] = V::fma(V::load(xr + 16), hi, acc[r][c]);
        }
      }
    } else {
      V w[C][2];
      for (int c = 0; c < C; ++c) dequant<V, KIND>(p.w + (c0 + c) * row_bytes + b * BB, w[c][0], w[c][1]);
      for (int r = 0; r < R; ++r) {
        const float* xr = p.x + (r0 + r) * p.k + b * BLOCK;
        V x0 = V::load(xr), x1 = V::load(xr + 16);
        for (int c = 0; c < C; ++c) {
          acc[r][c] = V::fma(x0, w[c][0], acc[r][c]);
          acc[r][c] = V::fma(x1, w[c][1], acc[r][c]);
        }
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) p.y[(r0 + r) * p.m + c0 + c] = V::sum(acc[r][c]);
}

// Rows in tiles of R, the rest in tiles of R/2, R/4, ... 1; the tiling changes speed, never a result.
template <class V, int KIND, int R, int C>
inline void rows_for_columns(const Problem& p, int64_t r_begin, int64_t r_end, int64_t c0) {
  int64_t r = r_begin;
  for (; r + R <= r_end; r += R) tile<V, KIND, R, C>(p, r, c0);
  if constexpr (R > 1) rows_for_columns<V, KIND, R / 2, C>(p, r, r_end, c0);
}

// Rows in blocks of ROW_BLOCK so a prefill's activations stay in L2 while the columns stream by.
constexpr int64_t ROW_BLOCK = 64;

template <class V, int KIND, int R, int C>
inline void columns_kind(const Problem& p, int64_t m0, int64_t m1) {
  for (int64_t rb = 0; rb < p.n; rb += ROW_BLOCK) {
    const int64_t re = rb + ROW_BLOCK < p.n ? rb + ROW_BLOCK : p.n;
    int64_t c = m0;
    for (; c + C <= m1; c += C) rows_for_columns<V, KIND, R, C>(p, rb, re, c);
    for (; c < m1; ++c) rows_for_columns<V, KIND, R, 1>(p, rb, re, c);
  }
}

template <class V, int R, int C>
inline void columns(const Problem& p, int64_t m0, int64_t m1) {
  if (p.kind == KIND_Q4_1) columns_kind<V, KIND_Q4_1, R, C>(p, m0, m1);
  else columns_kind<V, KIND_Q8_0, R, C>(p, m0, m1);
}

// Rows that no register tile fits: each column's weights are dequantized once into float32 in an
// L1-sized scratch, and every R rows then meet them from there. A tile holding all the rows does not
// fit (AVX2's 8 rows would need its 16 ymm registers for accumulators alone), and tiling the rows (or
// a 1-row tile per row) dequantizes each block again for every tile. Each ISA says when (kernel_*.cpp).
// Same order, so the same bits.
constexpr int64_t SCRATCH_FLOATS = 4096;  // 16 KB: one column of k <= 4096

template <class V, int R>
inline void scratch_rows(const Problem& p, const float* wcol, int64_t r, int64_t r_end, int64_t c) {
  const int64_t nb = p.k / BLOCK;
  for (; r + R <= r_end; r += R) {
    V acc[R];
    for (int i = 0; i < R; ++i) acc[i] = V::zero();
    for (int64_t b = 0; b < nb; ++b) {
      const V lo = V::load(wcol + b * BLOCK), hi = V::load(wcol + b * BLOCK + 16);
      for (int i = 0; i < R; ++i) {
        const float* xr = p.x + (r + i) * p.k + b * BLOCK;
        acc[i] = V::fma(V::load(xr), lo, acc[i]);
        acc[i] = V::fma(V::load(xr + 16), hi, acc[i]);
      }
    }
    for (int i = 0; i < R; ++i) p.y[(r + i) * p.m + c] = V::sum(acc[i]);
  }
  if constexpr (R > 1) scratch_rows<V, R / 2>(p, wcol, r, r_end, c);
}

template <class V, int KIND, int R>
inline void columns_through_scratch_kind(const Problem& p, int64_t m0, int64_t m1) {
  const int64_t row_bytes = p.k / BLOCK * block_bytes(KIND), ahead = (AHEAD_BYTES + row_bytes - 1) / row_bytes;
  alignas(64) float wcol[SCRATCH_FLOATS];
  for (int64_t rb = 0; rb < p.n; rb += ROW_BLOCK) {
    const int64_t re = rb + ROW_BLOCK < p.n ? rb + ROW_BLOCK : p.n;
    for (int64_t c = m0; c < m1; ++c) {
      if (c + ahead < p.m)
        for (int64_t off = 0; off < row_bytes; off += 64) __builtin_prefetch(p.w + (c + ahead) * row_bytes + off);
      dequantize_column<V, KIND>(p, c, wcol);
      scratch_rows<V, R>(p, wcol, rb, re, c);
    }
  }
}

// Whether a call may go through the scratch (its columns fit it).
inline bool fits_scratch(const Problem& p) { return p.k <= SCRATCH_FLOATS; }

template <class V, int R>
inline void columns_through_scratch(const Problem& p, int64_t m0, int64_t m1) {
  if (p.kind == KIND_Q4_1) columns_through_scratch_kind<V, KIND_Q4_1, R>(p, m0, m1);
  else columns_through_scratch_kind<V, KIND_Q8_0, R>(p, m0, m1);
}

// y[:, m0:m1) for every row: what one thread computes. Defined per ISA.
using Columns = void (*)(const Problem& p, int64_t m0, int64_t m1);
void columns_avx512(const Problem& p, int64_t m0, int64_t m1);
void columns_avx2(const Problem& p, int64_t m0, int64_t m1);
void columns_scalar(const Problem& p, int64_t m0, int64_t m1);

}  // namespace q4
