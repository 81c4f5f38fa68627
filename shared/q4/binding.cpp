// torch.ops.twintee_q4.mm(x, w, kind, isa): float32 activations [N, K] times GGUF blocks [M, K/32 * bytes]
// -> [N, M]. Threads split the output columns (at::parallel_for over torch.get_num_threads()), never a
// sum, so the thread count cannot change a result either.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "lanes.h"

namespace {

enum Isa { ISA_SCALAR = 0, ISA_AVX2 = 1, ISA_AVX512 = 2 };
// Columns per thread at the least: below this the fork costs more than the work it shares.
constexpr int64_t GRAIN_COLUMNS = 64;

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
  if (p.n > 0) at::parallel_for(0, p.m, GRAIN_COLUMNS, [&](int64_t m0, int64_t m1) { run(p, m0, m1); });
  return y;
}

}  // namespace

TORCH_LIBRARY(twintee_q4, m) { m.def("mm(Tensor x, Tensor w, int kind, int isa) -> Tensor", &mm); }
