// The portable path (no vector flags assumed; compiled with -ffp-contract=off): 16 floats and
// std::fma, the same roundings as the vector paths, so it is also their reference.
#include <cmath>
#include <cstring>

#include "lanes.h"
#include "panel.h"

namespace q4 {
namespace {

float half_to_float(const uint8_t* p) {  // IEEE binary16 -> binary32, exact (subnormals included)
  uint16_t h;
  std::memcpy(&h, p, 2);
  const int exp = (h >> 10) & 0x1F, man = h & 0x3FF;
  const float sign = (h & 0x8000) ? -1.0f : 1.0f;
  if (exp == 0) return sign * std::ldexp(static_cast<float>(man), -24);
  if (exp == 31) return man ? NAN : sign * INFINITY;
  return sign * std::ldexp(static_cast<float>(man | 0x400), exp - 25);
}

struct V {
  float l[16];
  static constexpr bool FEW_REGISTERS = false;
  static V zero() { return V{}; }
  static V load(const float* p) { V v; std::memcpy(v.l, p, sizeof v.l); return v; }
  static V broadcast(float f) { V v; for (float& l : v.l) l = f; return v; }
  static void store(float* p, const V& v) { std::memcpy(p, v.l, sizeof v.l); }
  static V fma(const V& a, const V& b, const V& c) {
    V o;
    for (int j = 0; j < 16; ++j) o.l[j] = std::fma(a.l[j], b.l[j], c.l[j]);
    return o;
  }
  static void q4_1(const uint8_t* blk, V& lo, V& hi) {
    const float d = half_to_float(blk), m = half_to_float(blk + 2);
    for (int j = 0; j < 16; ++j) {
      lo.l[j] = std::fma(static_cast<float>(blk[4 + j] & 0x0F), d, m);
      hi.l[j] = std::fma(static_cast<float>(blk[4 + j] >> 4), d, m);
    }
  }
  static void q8_0(const uint8_t* blk, V& lo, V& hi) {
    const float d = half_to_float(blk);
    for (int j = 0; j < 16; ++j) {
      lo.l[j] = static_cast<float>(static_cast<int8_t>(blk[2 + j])) * d;
      hi.l[j] = static_cast<float>(static_cast<int8_t>(blk[18 + j])) * d;
    }
  }
  static float sum(const V& a) {  // the fixed tree of lanes.h
    float h[8], q[4];
    for (int j = 0; j < 8; ++j) h[j] = a.l[j] + a.l[j + 8];
    for (int j = 0; j < 4; ++j) q[j] = h[j] + h[j + 4];
    const float r0 = q[0] + q[2], r1 = q[1] + q[3];
    return r0 + r1;
  }
};

}  // namespace

void columns_scalar(const Problem& p, int64_t m0, int64_t m1) { columns<V, 1, 1>(p, m0, m1); }
void panels_scalar(const Prompt& q, int64_t m0, int64_t m1) { panels<V, 1, 1>(q, m0, m1); }

}  // namespace q4
