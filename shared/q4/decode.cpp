// A node's decoder layers for one decode step (decode.h), on all of the step's threads at once.
//
// One OpenMP region runs the whole step; the threads split each projection's output columns and
// each phase's heads, and meet at a spinning barrier between phases (7 a layer). OpenMP's own
// barrier sleeps under OMP_WAIT_POLICY=PASSIVE, as the nodes run (shared/cpu.py), and waking a
// sleeper costs tens of microseconds: 105 of them a step would cost more than the split saves.
//
// Compiled once per ISA (build.py: -mavx512f, -mavx2, or neither) and always with -ffp-contract=off:
// every sum below has a fixed order (16 partial sums, then a fixed tree), every multiply-add two
// roundings, so a row's result is the same on every CPU, thread count and batch. The ISA's flags only
// widen the vectors gcc already made of the lane loops (SSE's 4 floats -> 8 or 16): the attention's
// dot products and weighted sums, the norms and rotary, at a long context a quarter of a step.
#include "decode.h"

#ifndef DECODE_LAYERS
#error "build.py compiles this file once per ISA, naming the entry point (-DDECODE_LAYERS=decode_layers_avx512, ...)"
#endif

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <thread>
#include <vector>

namespace q4 {
namespace {

// Spins (a waiting thread's core has nothing else of this step to do) and yields after ~0.1 ms, so a
// thread descheduled by a busy machine does not hold its partner's core hostage.
constexpr int SPINS = 4096;

class Barrier {
 public:
  void join(int n) { n_.store(n, std::memory_order_relaxed); }  // every thread stores the same count

  void wait() {
    const int n = n_.load(std::memory_order_relaxed);
    if (n == 1) return;
    const unsigned gen = gen_.load(std::memory_order_acquire);
    if (count_.fetch_add(1, std::memory_order_acq_rel) == n - 1) {
      count_.store(0, std::memory_order_relaxed);
      gen_.fetch_add(1, std::memory_order_release);
      return;
    }
    for (int spins = 0; gen_.load(std::memory_order_acquire) == gen; ++spins) {
      if (spins < SPINS) __builtin_ia32_pause(); else std::this_thread::yield();
    }
  }

 private:
  std::atomic<int> n_{1}, count_{0};
  std::atomic<unsigned> gen_{0};
};

struct Span {
  int64_t begin, end;
};

// Thread t's share of [0, total), cut at multiples of `align` (the kernels' column tiles).
Span share(int64_t total, int t, int nt, int64_t align) {
  auto cut = [&](int i) { return i == nt ? total : total * i / nt / align * align; };
  return {cut(t), cut(t + 1)};
}

constexpr int LANES = 16;

float dot(const float* a, const float* b, int64_t n) {  // the fixed order of lanes.h, in plain C++
  float acc[LANES] = {};
  int64_t i = 0;
  for (; i + LANES <= n; i += LANES)
    for (int l = 0; l < LANES; ++l) acc[l] += a[i + l] * b[i + l];
  for (int s = LANES / 2; s > 0; s /= 2)
    for (int l = 0; l < s; ++l) acc[l] += acc[l + s];
  float total = acc[0];
  for (; i < n; ++i) total += a[i] * b[i];
  return total;
}

// out[c0:c1) = w * (x * rsqrt(mean(x^2) + eps)), as shared.model.rms_norm orders it.
void rms_norm(const float* x, const float* w, float* out, int64_t d, float eps, Span cols) {
  const float scale = 1.0f / std::sqrt(dot(x, x, d) / static_cast<float>(d) + eps);
  for (int64_t c = cols.begin; c < cols.end; ++c) out[c] = w[c] * (x[c] * scale);
}

// head: [hd] rotated in place by position's angles (transformers' rotate_half convention).
void rope(float* head, const float* cos, const float* sin, int64_t hd, float* scratch) {
  const int64_t half = hd / 2;
  std::copy(head, head + hd, scratch);
  for (int64_t i = 0; i < hd; ++i) {
    const float rotated = i < half ? -scratch[i + half] : scratch[i - half];
    head[i] = scratch[i] * cos[i] + rotated * sin[i];
  }
}

float silu(float g) { return g / (1.0f + std::exp(-g)); }

struct Buffers {
  std::vector<float> h, qkv, attn, proj, gu, act;
};

class Step {
 public:
  explicit Step(const Decode& s)
      : s_(s), hd_(s.head_dim), qkv_width_((s.heads + 2 * s.kv_heads) * s.head_dim), attn_width_(s.heads * s.head_dim) {
    b_.h.resize(s.n * s.d);
    b_.qkv.resize(s.n * qkv_width_);
    b_.attn.resize(s.n * attn_width_);
    b_.proj.resize(s.n * s.d);
    b_.gu.resize(s.n * 2 * s.ffn);
    b_.act.resize(s.n * s.ffn);
    for (int64_t r = 0; r < s.n; ++r) longest_ = std::max(longest_, s.rows[r].pos + 1);
  }

  void run(int t, int nt) {
    std::vector<float> scores(longest_), scratch(hd_);
    for (int64_t li = 0; li < s_.n_layers; ++li) layer(li, t, nt, scores.data(), scratch.data());
  }

  Barrier barrier;

 private:
  void layer(int64_t li, int t, int nt, float* scores, float* scratch) {
    const LayerWeights& w = s_.layers[li];
    const Span model_cols = share(s_.d, t, nt, LANES);
    for (int64_t r = 0; r < s_.n; ++r) rms_norm(row(s_.x, r, s_.d), w.ln1, row(b_.h.data(), r, s_.d), s_.d, s_.eps, model_cols);
    barrier.wait();
    const Span qkv_cols = share(qkv_width_, t, nt, LANES);
    project(b_.h.data(), w.wqkv, s_.d, qkv_width_, b_.qkv.data(), qkv_cols);
    if (w.bqkv)
      for (int64_t r = 0; r < s_.n; ++r)
        for (int64_t c = qkv_cols.begin; c < qkv_cols.end; ++c) b_.qkv[r * qkv_width_ + c] += w.bqkv[c];
    barrier.wait();
    place_heads(li, t, nt, scratch);
    barrier.wait();
    attend(li, t, nt, scores);
    barrier.wait();
    add_projection(b_.attn.data(), w.wo, attn_width_, model_cols);
    barrier.wait();
    for (int64_t r = 0; r < s_.n; ++r) rms_norm(row(s_.x, r, s_.d), w.ln2, row(b_.h.data(), r, s_.d), s_.d, s_.eps, model_cols);
    barrier.wait();
    mlp_activation(w.wgu, t, nt);
    barrier.wait();
    add_projection(b_.act.data(), w.wdown, s_.ffn, model_cols);
    barrier.wait();
  }

  static float* row(float* base, int64_t r, int64_t width) { return base + r * width; }

  void project(const float* x, const uint8_t* w, int64_t k, int64_t m, float* y, Span cols) const {
    if (cols.begin < cols.end) s_.columns(Problem{x, w, y, s_.n, k, m, KIND_Q4_1}, cols.begin, cols.end);
  }

  // x[:, cols) += (in @ w.T)[:, cols): the residual after the attention or the MLP.
  void add_projection(const float* in, const uint8_t* w, int64_t k, Span cols) {
    project(in, w, k, s_.d, b_.proj.data(), cols);
    for (int64_t r = 0; r < s_.n; ++r)
      for (int64_t c = cols.begin; c < cols.end; ++c) s_.x[r * s_.d + c] += b_.proj[r * s_.d + c];
  }

  // Rotates each query and key head at its row's position and writes the keys and values into the
  // row's cache. All rows' keys land before any row attends, so a cache replayed as several rows of
  // one step (a restarted node2) sees each earlier row's key, as the original steps did.
  void place_heads(int64_t li, int t, int nt, float* scratch) {
    const int64_t per_row = s_.heads + 2 * s_.kv_heads;
    const Span units = share(s_.n * per_row, t, nt, 1);
    for (int64_t u = units.begin; u < units.end; ++u) {
      const int64_t r = u / per_row, j = u % per_row, pos = s_.rows[r].pos;
      float* head = b_.qkv.data() + r * qkv_width_ + j * hd_;
      if (j < s_.heads + s_.kv_heads) rope(head, s_.cos + pos * hd_, s_.sin + pos * hd_, hd_, scratch);
      if (j < s_.heads) continue;
      const bool is_key = j < s_.heads + s_.kv_heads;
      const int64_t kvh = is_key ? j - s_.heads : j - s_.heads - s_.kv_heads;
      float* cache = is_key ? s_.rows[r].k : s_.rows[r].v;
      std::copy(head, head + hd_, cache + cache_offset(s_.rows[r], li, kvh, pos));
    }
  }

  int64_t cache_offset(const Row& row, int64_t li, int64_t kvh, int64_t pos) const {
    return ((li * s_.kv_heads + kvh) * row.capacity + pos) * hd_;
  }

  // Each (row, query head): softmax(q k^T / sqrt(hd)) v over the row's positions [0, pos]. Query head
  // h reads KV head h / (H / Hkv), as transformers' repeat_kv has it.
  void attend(int64_t li, int t, int nt, float* scores) {
    const Span units = share(s_.n * s_.heads, t, nt, 1);
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd_));
    for (int64_t u = units.begin; u < units.end; ++u) {
      const int64_t r = u / s_.heads, h = u % s_.heads, len = s_.rows[r].pos + 1;
      const int64_t base = cache_offset(s_.rows[r], li, h / (s_.heads / s_.kv_heads), 0);
      const float *q = b_.qkv.data() + r * qkv_width_ + h * hd_, *keys = s_.rows[r].k + base, *vals = s_.rows[r].v + base;
      float top = -INFINITY, total = 0.0f;
      for (int64_t j = 0; j < len; ++j) top = std::max(top, scores[j] = dot(q, keys + j * hd_, hd_) * scale);
      for (int64_t j = 0; j < len; ++j) total += scores[j] = std::exp(scores[j] - top);
      float* out = b_.attn.data() + r * attn_width_ + h * hd_;
      std::fill(out, out + hd_, 0.0f);
      for (int64_t j = 0; j < len; ++j) {
        const float p = scores[j] / total;
        for (int64_t i = 0; i < hd_; ++i) out[i] += p * vals[j * hd_ + i];
      }
    }
  }

  // This thread's gate columns and the same up columns, then silu(gate) * up there: no barrier between.
  void mlp_activation(const uint8_t* wgu, int t, int nt) {
    const int64_t f = s_.ffn;
    const Span cols = share(f, t, nt, LANES);
    project(b_.h.data(), wgu, s_.d, 2 * f, b_.gu.data(), cols);
    project(b_.h.data(), wgu, s_.d, 2 * f, b_.gu.data(), Span{f + cols.begin, f + cols.end});
    for (int64_t r = 0; r < s_.n; ++r)
      for (int64_t j = cols.begin; j < cols.end; ++j)
        b_.act[r * f + j] = silu(b_.gu[r * 2 * f + j]) * b_.gu[r * 2 * f + f + j];
  }

  const Decode& s_;
  const int64_t hd_, qkv_width_, attn_width_;
  int64_t longest_ = 0;
  Buffers b_;
};

}  // namespace

void DECODE_LAYERS(const Decode& s) {
  if (s.n == 0) return;
  Step step(s);
  if (s.threads <= 1) {
    step.run(0, 1);
    return;
  }
#pragma omp parallel num_threads(s.threads)
  {
    const int nt = omp_get_num_threads();  // may be fewer than asked (a nested call): count what came
    step.barrier.join(nt);
    step.run(omp_get_thread_num(), nt);
  }
}

}  // namespace q4
