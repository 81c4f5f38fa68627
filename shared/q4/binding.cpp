// torch.ops.twintee_q4.mm(x, w, kind, isa): float32 activations [N, K] times GGUF blocks [M, K/32 * bytes]
// -> [N, M]. Threads split the output columns (at::parallel_for over torch.get_num_threads()), never a
// sum, so the thread count cannot change a result either. at::parallel_for's OpenMP code is inline: this
// unit must be compiled with -fopenmp (build.py), or every call runs on the calling thread alone.
#include <algorithm>
#include <atomic>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "lanes.h"

namespace {

enum Isa { ISA_SCALAR = 0, ISA_AVX2 = 1, ISA_AVX512 = 2 };
// Columns per thread at the least: below this the fork costs more than the work it shares.
constexpr int64_t GRAIN_COLUMNS = 64;
// Weight bytes times rows a thread must get before a call wakes a second one. Waking an idle OpenMP
// thread (the nodes run them passive, issue 17) costs tens of microseconds, more on a busy machine, so
// at one row only gate|up (1.1 MB, ~150 us) and the head (30 MB) split; qkv, o and down (0.3-0.6 MB,
// 30-70 us) run on the calling thread. A prefill's rows make every projection worth splitting.
constexpr int64_t MIN_SPLIT_WORK = int64_t(1) << 20;

int64_t grain_columns(int64_t n, int64_t row_bytes) {
  const int64_t per_column = std::max<int64_t>(1, n * row_bytes);
  return std::max(GRAIN_COLUMNS, (MIN_SPLIT_WORK + per_column - 1) / per_column);
}

at::Tensor mm(const at::Tensor& x, const at::Tensor& w, int64_t kind, int64_t isa) {
  TORCH_CHECK(x.device().is_cpu() && w.device().is_cpu(), "twintee_q4.mm runs on the CPU");
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.dim() == 2 && x.is_contiguous(), "x must be contiguous float32 [N, K]");
  TORCH_CHECK(w.scalar_type() == at::kByte && w.dim() == 2 && w.is_contiguous(), "w must be contiguous uint8 [M, bytes]");
  TORCH_CHECK(kind == q4::KIND_Q4_1 || kind == q4::KIND_Q8_0, "kind must be 0 (q4_1) or 1 (q8_0)");
  const int64_t k = x.size(1), bb = kind == q4::KIND_Q4_1 ? q4::Q4_1_BYTES : q4::Q8_0_BYTES;
  TORCH_CHECK(k % q4::BLOCK == 0 && w.size(1) == k / q4::BLOCK * bb, "w's row bytes do not fit K = ", k);
  at::Tensor y = at::empty({x.size(0), w.size(0)}, x.options());
  const q4::Problem p{x.data_ptr<float>(), w.data_ptr<uint8_t>(), y.data_ptr<float>(), x.size(0), k, w.size(0),
                      static_cast<int>(kind)};
  auto run = isa == ISA_AVX512 ? q4::columns_avx512 : isa == ISA_AVX2 ? q4::columns_avx2 : q4::columns_scalar;
  if (p.n > 0) at::parallel_for(0, p.m, grain_columns(p.n, w.size(1)), [&](int64_t m0, int64_t m1) { run(p, m0, m1); });
  return y;
}

// How many threads mm's split of an [n, *] x [m, row_bytes] call runs on (at most 63): what tests check
// to see that the split is compiled in and that small calls stay on the calling thread.
int64_t split_threads(int64_t n, int64_t m, int64_t row_bytes) {
  std::atomic<uint64_t> seen{0};
  at::parallel_for(0, m, grain_columns(n, row_bytes), [&](int64_t, int64_t) {
    seen |= uint64_t(1) << std::min(at::get_thread_num(), 62);
  });
  return __builtin_popcountll(seen.load());
}

}  // namespace

TORCH_LIBRARY(twintee_q4, m) {
  m.def("mm(Tensor x, Tensor w, int kind, int isa) -> Tensor", &mm);
  m.def("split_threads(int n, int m, int row_bytes) -> int", &split_threads);
}
