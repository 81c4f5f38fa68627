// The AVX2 path (compiled with -mavx2 -mfma -mf16c): two ymm hold lanes 0-7 and 8-15.
#include <immintrin.h>

#include "lanes.h"
#include "panel.h"

namespace q4 {
namespace {

struct V {
  __m256 a, b;  // lanes 0-7, lanes 8-15
  static constexpr bool FEW_REGISTERS = true;  // 16 ymm: lanes.h dequantizes a column at a time
  static V zero() { return {_mm256_setzero_ps(), _mm256_setzero_ps()}; }
  static V load(const float* p) { return {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}; }
  static V broadcast(float f) { return {_mm256_set1_ps(f), _mm256_set1_ps(f)}; }
  static void store(float* p, V x) { _mm256_storeu_ps(p, x.a); _mm256_storeu_ps(p + 8, x.b); }
  static V fma(V x, V y, V c) { return {_mm256_fmadd_ps(x.a, y.a, c.a), _mm256_fmadd_ps(x.b, y.b, c.b)}; }
  static float half(const uint8_t* p) { return _cvtsh_ss(*reinterpret_cast<const uint16_t*>(p)); }
  static __m256 floats(__m128i eight_bytes_low, bool is_signed) {
    return _mm256_cvtepi32_ps(is_signed ? _mm256_cvtepi8_epi32(eight_bytes_low) : _mm256_cvtepu8_epi32(eight_bytes_low));
  }
  static void q4_1(const uint8_t* blk, V& lo, V& hi) {
    // d and m in one broadcast load: lanes [d, m, d, m, ...], then each duplicated across the vector.
    const __m256 dm = _mm256_cvtph_ps(_mm_set1_epi32(*reinterpret_cast<const int32_t*>(blk)));
    const __m256 d = _mm256_moveldup_ps(dm), m = _mm256_movehdup_ps(dm);
    // Bytes 0-7 and 8-15 widened once each; byte j holds weight j (low nibble) and j + 16 (high nibble).
    auto eight = [blk](int at) { return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(blk + at))); };
    const __m256i qa = eight(4), qb = eight(12);
    const __m256i mask = _mm256_set1_epi32(0x0F);
    auto w = [&](__m256i q) { return _mm256_fmadd_ps(_mm256_cvtepi32_ps(q), d, m); };  // d*q exact: one rounding
    lo.a = w(_mm256_and_si256(qa, mask));
    lo.b = w(_mm256_and_si256(qb, mask));
    hi.a = w(_mm256_srli_epi32(qa, 4));
    hi.b = w(_mm256_srli_epi32(qb, 4));
  }
  static void q8_0(const uint8_t* blk, V& lo, V& hi) {
    const __m256 d = _mm256_set1_ps(half(blk));
    auto at = [blk](int i) { return _mm_loadl_epi64(reinterpret_cast<const __m128i*>(blk + 2 + 8 * i)); };
    lo.a = _mm256_mul_ps(floats(at(0), true), d);
    lo.b = _mm256_mul_ps(floats(at(1), true), d);
    hi.a = _mm256_mul_ps(floats(at(2), true), d);
    hi.b = _mm256_mul_ps(floats(at(3), true), d);
  }
  static float sum(V x) {  // the fixed tree of lanes.h
    const __m256 h = _mm256_add_ps(x.a, x.b);
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    return _mm_cvtss_f32(_mm_add_ss(q, _mm_shuffle_ps(q, q, 1)));
  }
};

}  // namespace

// One row: 4 columns at once (8 accumulator chains). Four rows: 4 rows x 1 column, each block's weights
// dequantized once for the 4 rows in registers. Any other count: each column dequantized once into an
// L1 scratch for all the rows, 4 at a time (lanes.h). Measured (one thread, SmolLM2's gate|up, batch
// 8): 4x1 0.50 ms, 2x2 0.71, 8x1 in registers 0.42 but slower for the head (its spills). Through the
// scratch, one thread, alternating builds, 15 layers' projections / the head: 8 rows 16.7/15.4 ->
// 14.6/14.3 ms / 7.9 -> 7.3/7.0 ms (the in-process batch-8 step at two threads 24.0/25.6 -> 22.6/23.8
// ms); 5, 6, 7 rows 11.9, 12.9, 17.1 -> 10.7, 11.6, 14.4 ms; 2 and 3 rows (1x4 tiles a row, each
// dequantizing again) 7.4-8.3, 10.9-11.9 -> 6.8, 9.0 ms. 6 rows a pass from the scratch: slower.
void columns_avx2(const Problem& p, int64_t m0, int64_t m1) {
  if (p.n == 1) columns<V, 1, 4>(p, m0, m1);
  else if (p.n != 4 && fits_scratch(p)) columns_through_scratch<V, 4>(p, m0, m1);
  else columns<V, 4, 1>(p, m0, m1);
}

// Prompt rows: 1 slice (16 rows) x 6 columns (12 accumulator halves, 2 of x, 1 broadcast w: 15 of the
// 16 ymm). 4 columns left 8 FMA chains, just the FMA latency times its two ports, and lost cycles to any
// stall: one thread, AVX2 caps, a layer's four projections at 256 rows 20.9 -> 19.3 ms (MKL's float32
// sgemm ~16).
void panels_avx2(const Prompt& q, int64_t m0, int64_t m1) { panels<V, 1, 6>(q, m0, m1); }

}  // namespace q4
