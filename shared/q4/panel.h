// The prompt order: how a step's rows of prompt tokens (a prefill) multiply by a weight's blocks.
//
// y[r, m] = x[r, 0] * w[m, 0] + ... in increasing k, one fused multiply-add each, from zero: a plain
// chain per output element. The rows are transposed once a call (16 rows to a vector, k-major), a
// panel of C columns is dequantized once into float32, and every 16-row slice then meets every
// column of the panel as one multiply-add per k (x[16 rows, k] times a broadcast w[c, k]). The
// dequantization, most of a one-row call's work, is paid once a call instead of once per 8 rows:
// ~2x lanes.h's tiles at hundreds of rows.
//
// The chain is element-wise, so a row's result cannot depend on the rows beside it (a short last
// slice is padded with zero rows, whose results are dropped), the tile, the thread or the ISA:
// batch-invariant, the same bits on every path. It is not lanes.h's order, so it serves only the
// rows of prompts (shared.model.layer_ops) and never a token's decode row: each row of a sequence is
// always summed one way.
#pragma once
#include <cstdint>
#include <vector>

#include "lanes.h"

namespace q4 {

constexpr int64_t SLICE = 16;  // rows a vector holds
constexpr int64_t PANEL_COLUMNS = 48;  // columns dequantized at once; threads take whole panels (binding.cpp)

struct Prompt {
  const Problem& p;
  const float* xt;  // [slices, K, 16]: xt[(s * K + k) * 16 + i] = x[16 s + i, k], zero past the last row
};

// wbuf[c * K + k] = w[c0 + c, k] for the panel's columns.
template <class V, int KIND>
inline void dequantize_panel(const Problem& p, int64_t c0, int64_t width, float* wbuf) {
  for (int64_t c = 0; c < width; ++c) dequantize_column<V, KIND>(p, c0 + c, wbuf + c * p.k);
}

// S slices (16 S rows from slice s0) x C columns of the panel, every k.
template <class V, int S, int C>
inline void panel_tile(const Prompt& q, const float* wbuf, int64_t s0, int64_t c0, int64_t cp) {
  const int64_t k_all = q.p.k;
  V acc[S][C];
  for (int s = 0; s < S; ++s)
    for (int c = 0; c < C; ++c) acc[s][c] = V::zero();
  for (int64_t k = 0; k < k_all; ++k) {
    V x[S];
    for (int s = 0; s < S; ++s) x[s] = V::load(q.xt + ((s0 + s) * k_all + k) * SLICE);
    for (int c = 0; c < C; ++c) {
      const V w = V::broadcast(wbuf[(cp + c) * k_all + k]);
      for (int s = 0; s < S; ++s) acc[s][c] = V::fma(x[s], w, acc[s][c]);
    }
  }
  // Out a row at a time, its C columns side by side: column by column, each store went to another row,
  // and rows m * 4 bytes apart (12 KB for gate|up) all fall in one L1 set.
  alignas(64) float out[S][C][SLICE];
  for (int s = 0; s < S; ++s)
    for (int c = 0; c < C; ++c) V::store(out[s][c], acc[s][c]);
  for (int s = 0; s < S; ++s) {
    const int64_t r0 = (s0 + s) * SLICE, rows = q.p.n - r0 < SLICE ? q.p.n - r0 : SLICE;
    for (int64_t i = 0; i < rows; ++i) {
      float* yr = q.p.y + (r0 + i) * q.p.m + c0 + cp;
      for (int c = 0; c < C; ++c) yr[c] = out[s][c][i];
    }
  }
}

// Every slice against the panel's columns [0, width): tiles of S slices, then single slices, and
// columns C at a time, then one at a time.
template <class V, int S, int C>
inline void panel_columns(const Prompt& q, const float* wbuf, int64_t c0, int64_t width) {
  const int64_t slices = (q.p.n + SLICE - 1) / SLICE;
  auto columns = [&](auto tile_s, int64_t s0) {
    constexpr int TS = decltype(tile_s)::value;
    int64_t c = 0;
    for (; c + C <= width; c += C) panel_tile<V, TS, C>(q, wbuf, s0, c0, c);
    for (; c < width; ++c) panel_tile<V, TS, 1>(q, wbuf, s0, c0, c);
  };
  int64_t s = 0;
  for (; s + S <= slices; s += S) columns(std::integral_constant<int, S>{}, s);
  for (; s < slices; ++s) columns(std::integral_constant<int, 1>{}, s);
}

// y[:, m0:m1) for every row in the prompt order: what one thread computes, a panel at a time.
template <class V, int S, int C>
inline void panels(const Prompt& q, int64_t m0, int64_t m1) {
  std::vector<float> wbuf(PANEL_COLUMNS * q.p.k);
  for (int64_t c0 = m0; c0 < m1; c0 += PANEL_COLUMNS) {
    const int64_t width = m1 - c0 < PANEL_COLUMNS ? m1 - c0 : PANEL_COLUMNS;
    if (q.p.kind == KIND_Q4_1) dequantize_panel<V, KIND_Q4_1>(q.p, c0, width, wbuf.data());
    else dequantize_panel<V, KIND_Q8_0>(q.p, c0, width, wbuf.data());
    panel_columns<V, S, C>(q, wbuf.data(), c0, width);
  }
}

// Defined per ISA beside columns_*.
using Panels = void (*)(const Prompt& q, int64_t m0, int64_t m1);
void panels_avx512(const Prompt& q, int64_t m0, int64_t m1);
void panels_avx2(const Prompt& q, int64_t m0, int64_t m1);
void panels_scalar(const Prompt& q, int64_t m0, int64_t m1);

}  // namespace q4
