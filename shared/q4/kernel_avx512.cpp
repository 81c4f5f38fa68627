// The AVX-512 path (compiled with -mavx512f -mfma -mf16c): one zmm holds the 16 lanes.
#include <immintrin.h>

#include "lanes.h"
#include "panel.h"

namespace q4 {
namespace {

struct V {
  __m512 v;
  static constexpr bool FEW_REGISTERS = false;  // 32 zmm hold every column of a tile
  static V zero() { return {_mm512_setzero_ps()}; }
  static V load(const float* p) { return {_mm512_loadu_ps(p)}; }
  static V broadcast(float f) { return {_mm512_set1_ps(f)}; }
  static void store(float* p, V a) { _mm512_storeu_ps(p, a.v); }
  static V fma(V a, V b, V c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }
  static float half(const uint8_t* p) { return _cvtsh_ss(*reinterpret_cast<const uint16_t*>(p)); }
  static void q4_1(const uint8_t* blk, V& lo, V& hi) {
    // d and m in one broadcast load: lanes [d, m, d, m, ...], then each duplicated across the vector.
    const __m512 dm = _mm512_cvtph_ps(_mm256_set1_epi32(*reinterpret_cast<const int32_t*>(blk)));
    const __m512 d = _mm512_moveldup_ps(dm), m = _mm512_movehdup_ps(dm);
    // All 16 bytes widened once; byte j holds weight j (low nibble) and weight j + 16 (high nibble).
    const __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 4)));
    const __m512i mask = _mm512_set1_epi32(0x0F);
    lo.v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_and_si512(q, mask)), d, m);  // d*q exact: one rounding, as d*q+m
    hi.v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(q, 4)), d, m);
  }
  static void q8_0(const uint8_t* blk, V& lo, V& hi) {
    const __m512 d = _mm512_set1_ps(half(blk));
    lo.v = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2)))), d);
    hi.v = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 18)))), d);
  }
  static float sum(V a) {  // the fixed tree of lanes.h
    const __m256 lo = _mm512_castps512_ps256(a.v);
    const __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a.v), 1));
    const __m256 h = _mm256_add_ps(lo, hi);
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    return _mm_cvtss_f32(_mm_add_ss(q, _mm_shuffle_ps(q, q, 1)));
  }
};

}  // namespace

// One row: 8 columns at once, so 8 independent accumulator chains hide the FMA latency. Two or three:
// each column dequantized once into an L1 scratch for all of them (lanes.h), where 1x8 tiles a row
// dequantized everything again for each row. Four and more: 8 rows x 2 columns (16 accumulators, 4
// dequantized weight vectors, 2 of x in 32 zmm registers), each block's weights dequantized once for 8
// rows. One thread, alternating builds, 15 layers' projections / the head: 2 rows 7.0-7.1 -> 6.2-6.4 ms
// / 3.3 -> 2.9 ms, 3 rows 10.3-10.5 -> 8.4-8.7 / 5.0 -> 3.9; through the scratch 4 rows were slower
// (5.8-6.1 -> 7.1-7.3 ms) and 6 the same.
constexpr int64_t FEW_ROWS = 4;  // below it, the scratch; from it, the 8x2 row tile

void columns_avx512(const Problem& p, int64_t m0, int64_t m1) {
  if (p.n == 1) columns<V, 1, 8>(p, m0, m1);
  else if (p.n < FEW_ROWS && fits_scratch(p)) columns_through_scratch<V, 8>(p, m0, m1);
  else columns<V, 8, 2>(p, m0, m1);
}

// Prompt rows: 2 slices (32 rows) x 12 columns (24 accumulators, 2 of x, 1 broadcast w in 32 zmm).
void panels_avx512(const Prompt& q, int64_t m0, int64_t m1) { panels<V, 2, 12>(q, m0, m1); }

}  // namespace q4
