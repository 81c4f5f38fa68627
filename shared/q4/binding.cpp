// torch.ops.twintee_q4.mm(x, w, kind, isa) (a token's rows) and prompt_mm (a prompt's rows, panel.h): float32
// activations [N, K] times GGUF blocks [M, K/32 * bytes] -> [N, M]. Threads split the output columns (at::parallel_for over torch.get_num_threads()), never a
// sum, so the thread count cannot change a result either. at::parallel_for's OpenMP code is inline: this
// unit must be compiled with -fopenmp (build.py), or every call runs on the calling thread alone.
#include <algorithm>
#include <atomic>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "decode.h"
#include "lanes.h"
#include "panel.h"

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

// The ISA's function of a kind: `by_isa(isa, q4::columns_avx512, q4::columns_avx2, q4::columns_scalar)`.
template <class F>
F by_isa(int64_t isa, F avx512, F avx2, F scalar) {
  TORCH_CHECK(isa >= ISA_SCALAR && isa <= ISA_AVX512, "isa must be 0 (baseline), 1 (avx2) or 2 (avx512)");
  return isa == ISA_AVX512 ? avx512 : isa == ISA_AVX2 ? avx2 : scalar;
}

q4::Columns columns_for(int64_t isa) { return by_isa(isa, q4::columns_avx512, q4::columns_avx2, q4::columns_scalar); }
q4::Panels panels_for(int64_t isa) { return by_isa(isa, q4::panels_avx512, q4::panels_avx2, q4::panels_scalar); }
q4::DecodeLayers decode_for(int64_t isa) {
  return by_isa<q4::DecodeLayers>(isa, q4::decode_layers_avx512, q4::decode_layers_avx2, q4::decode_layers_scalar);
}

q4::Problem problem(const at::Tensor& x, const at::Tensor& w, int64_t kind, at::Tensor& y) {
  TORCH_CHECK(x.device().is_cpu() && w.device().is_cpu(), "twintee_q4 runs on the CPU");
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.dim() == 2 && x.is_contiguous(), "x must be contiguous float32 [N, K]");
  TORCH_CHECK(w.scalar_type() == at::kByte && w.dim() == 2 && w.is_contiguous(), "w must be contiguous uint8 [M, bytes]");
  TORCH_CHECK(kind == q4::KIND_Q4_1 || kind == q4::KIND_Q8_0, "kind must be 0 (q4_1) or 1 (q8_0)");
  const int64_t k = x.size(1), bb = q4::block_bytes(static_cast<int>(kind));
  TORCH_CHECK(k % q4::BLOCK == 0 && w.size(1) == k / q4::BLOCK * bb, "w's row bytes do not fit K = ", k);
  y = at::empty({x.size(0), w.size(0)}, x.options());
  return {x.data_ptr<float>(), w.data_ptr<uint8_t>(), y.data_ptr<float>(), x.size(0), k, w.size(0), static_cast<int>(kind)};
}

// A token's rows, in lanes.h's order.
at::Tensor mm(const at::Tensor& x, const at::Tensor& w, int64_t kind, int64_t isa) {
  at::Tensor y;
  const q4::Problem p = problem(x, w, kind, y);
  auto run = columns_for(isa);
  if (p.n > 0) at::parallel_for(0, p.m, grain_columns(p.n, w.size(1)), [&](int64_t m0, int64_t m1) { run(p, m0, m1); });
  return y;
}

// A prompt's rows, in panel.h's order; threads take whole panels.
at::Tensor prompt_mm(const at::Tensor& x, const at::Tensor& w, int64_t kind, int64_t isa) {
  at::Tensor y;
  const q4::Problem p = problem(x, w, kind, y);
  auto run = panels_for(isa);
  if (p.n == 0) return y;
  // The rows, transposed once for every panel: xt[s, k, i] = x[16 s + i, k], zero rows padding the last slice.
  const int64_t slices = (p.n + q4::SLICE - 1) / q4::SLICE;
  at::Tensor xt = at::empty({slices, p.k, q4::SLICE}, x.options());
  float* t = xt.data_ptr<float>();
  for (int64_t r = 0; r < slices * q4::SLICE; ++r) {  // one pass in x's order: ~0.1 ms for 428 x 576
    const float* row = r < p.n ? p.x + r * p.k : nullptr;
    float* out = t + (r / q4::SLICE) * p.k * q4::SLICE + r % q4::SLICE;
    for (int64_t k = 0; k < p.k; ++k) out[k * q4::SLICE] = row ? row[k] : 0.0f;
  }
  const q4::Prompt q{p, t};
  const int64_t n_panels = (p.m + q4::PANEL_COLUMNS - 1) / q4::PANEL_COLUMNS;
  const int64_t grain = (grain_columns(p.n, w.size(1)) + q4::PANEL_COLUMNS - 1) / q4::PANEL_COLUMNS;
  at::parallel_for(0, n_panels, grain, [&](int64_t b, int64_t e) { run(q, b * q4::PANEL_COLUMNS, std::min(e * q4::PANEL_COLUMNS, p.m)); });
  return y;
}

// Rows `ids` of a table in its blocks (node1's embedding), dequantized as blocks.py's `dequantize` does:
// d*q is exact in float32, so d*q + m rounds once however it is computed. One call instead of the
// dozen small torch ops a token's row took in Python (~110 us a step with the caches cold).
at::Tensor rows(const at::Tensor& w, const at::Tensor& ids, int64_t kind) {
  TORCH_CHECK(w.device().is_cpu() && w.scalar_type() == at::kByte && w.dim() == 2 && w.is_contiguous(),
              "w must be contiguous uint8 [rows, bytes] on the CPU");
  TORCH_CHECK(kind == q4::KIND_Q4_1 || kind == q4::KIND_Q8_0, "kind must be 0 (q4_1) or 1 (q8_0)");
  TORCH_CHECK(ids.device().is_cpu() && ids.scalar_type() == at::kLong && ids.dim() == 1, "ids must be int64 [N]");
  const int64_t bb = q4::block_bytes(static_cast<int>(kind)), row_bytes = w.size(1), nb = row_bytes / bb;
  TORCH_CHECK(row_bytes % bb == 0, "w's row bytes are not whole blocks");
  const at::Tensor idc = ids.contiguous();
  const int64_t* id = idc.data_ptr<int64_t>();
  at::Tensor y = at::empty({ids.size(0), nb * q4::BLOCK}, at::kFloat);
  float* out = y.data_ptr<float>();
  auto half = [](const uint8_t* p) { return static_cast<float>(c10::Half(uint16_t(p[0] | p[1] << 8), c10::Half::from_bits())); };
  for (int64_t r = 0; r < ids.size(0); ++r) {
    TORCH_CHECK(id[r] >= 0 && id[r] < w.size(0), "id ", id[r], " is outside the table's ", w.size(0), " rows");
    const uint8_t* row = w.data_ptr<uint8_t>() + id[r] * row_bytes;
    for (int64_t b = 0; b < nb; ++b, out += q4::BLOCK) {
      const uint8_t* blk = row + b * bb;
      const float d = half(blk);
      if (kind == q4::KIND_Q8_0) {
        for (int j = 0; j < q4::BLOCK; ++j) out[j] = d * static_cast<float>(static_cast<int8_t>(blk[2 + j]));
      } else {
        const float m = half(blk + 2);
        for (int j = 0; j < q4::BLOCK / 2; ++j) {  // byte j: weight j (low nibble), weight j + 16 (high)
          out[j] = d * static_cast<float>(blk[4 + j] & 0x0F) + m;
          out[j + 16] = d * static_cast<float>(blk[4 + j] >> 4) + m;
        }
      }
    }
  }
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

void check_blocks(const at::Tensor& w, int64_t rows, int64_t k, const char* name) {
  const int64_t row_bytes = k / q4::BLOCK * q4::block_bytes(q4::KIND_Q4_1);
  TORCH_CHECK(w.scalar_type() == at::kByte && w.is_contiguous() && w.dim() == 2 && w.size(0) == rows &&
                  w.size(1) == row_bytes,
              name, " must be contiguous Q4_1 blocks [", rows, ", ", row_bytes, "]");
}

void check_floats(const at::Tensor& t, int64_t numel, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kFloat && t.is_contiguous() && t.numel() == numel, name, " must be ", numel,
              " contiguous float32 values");
}

// torch.ops.twintee_q4.decode_layers: x [N, D] (one new token per row) through every layer given, each
// row against its own cache [L, Hkv, C, hd] at its position -> [N, D]. Writes each row's key and value.
at::Tensor decode_layers(const at::Tensor& x, at::TensorList ln1, at::TensorList wqkv, at::TensorList bqkv,
                         at::TensorList wo, at::TensorList ln2, at::TensorList wgu, at::TensorList wdown,
                         at::TensorList k_caches, at::TensorList v_caches, at::IntArrayRef positions,
                         const at::Tensor& cos, const at::Tensor& sin, int64_t heads, int64_t kv_heads, int64_t ffn,
                         double eps, int64_t isa) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.dim() == 2 && x.is_contiguous(), "x must be contiguous float32 [N, D]");
  const int64_t n = x.size(0), d = x.size(1), n_layers = static_cast<int64_t>(ln1.size());
  TORCH_CHECK(cos.dim() == 2 && cos.sizes() == sin.sizes(), "cos and sin must be [P, hd]");
  const int64_t hd = cos.size(1), qkv = (heads + 2 * kv_heads) * hd;
  TORCH_CHECK(heads > 0 && kv_heads > 0 && heads % kv_heads == 0 && hd % 2 == 0 && d % q4::BLOCK == 0 &&
                  (heads * hd) % q4::BLOCK == 0 && ffn % q4::BLOCK == 0, "unsupported shape");
  check_floats(cos, cos.size(0) * hd, "cos");
  check_floats(sin, cos.size(0) * hd, "sin");
  for (const auto* list : {&wqkv, &wo, &ln2, &wgu, &wdown})
    TORCH_CHECK(static_cast<int64_t>(list->size()) == n_layers, "every weight list needs one tensor a layer");
  TORCH_CHECK(bqkv.empty() || static_cast<int64_t>(bqkv.size()) == n_layers, "bqkv: none, or one a layer");
  TORCH_CHECK(static_cast<int64_t>(k_caches.size()) == n && static_cast<int64_t>(v_caches.size()) == n &&
                  static_cast<int64_t>(positions.size()) == n, "one cache pair and position a row");
  std::vector<q4::LayerWeights> layers(n_layers);
  for (int64_t i = 0; i < n_layers; ++i) {
    check_floats(ln1[i], d, "ln1");
    check_floats(ln2[i], d, "ln2");
    check_blocks(wqkv[i], qkv, d, "wqkv");
    check_blocks(wo[i], d, heads * hd, "wo");
    check_blocks(wgu[i], 2 * ffn, d, "wgu");
    check_blocks(wdown[i], d, ffn, "wdown");
    if (!bqkv.empty()) check_floats(bqkv[i], qkv, "bqkv");
    layers[i] = {ln1[i].data_ptr<float>(), wqkv[i].data_ptr<uint8_t>(), bqkv.empty() ? nullptr : bqkv[i].data_ptr<float>(),
                 wo[i].data_ptr<uint8_t>(), ln2[i].data_ptr<float>(), wgu[i].data_ptr<uint8_t>(), wdown[i].data_ptr<uint8_t>()};
  }
  std::vector<q4::Row> rows(n);
  for (int64_t r = 0; r < n; ++r) {
    const int64_t capacity = k_caches[r].dim() == 4 ? k_caches[r].size(2) : 0;
    for (const auto& c : {k_caches[r], v_caches[r]})
      TORCH_CHECK(c.scalar_type() == at::kFloat && c.is_contiguous() && c.dim() == 4 && c.size(0) >= n_layers &&
                      c.size(1) == kv_heads && c.size(2) == capacity && c.size(3) == hd,
                  "a row's caches must be contiguous float32 [L, Hkv, C, hd], both alike");
    TORCH_CHECK(positions[r] >= 0 && positions[r] < capacity && positions[r] < cos.size(0), "position ", positions[r],
                " is outside the cache or the rotary table");
    rows[r] = {k_caches[r].data_ptr<float>(), v_caches[r].data_ptr<float>(), capacity, positions[r]};
  }
  at::Tensor y = x.clone();
  const q4::Decode step{y.data_ptr<float>(), n, layers.data(), n_layers, rows.data(), cos.data_ptr<float>(),
                        sin.data_ptr<float>(), d, heads, kv_heads, hd, ffn, static_cast<float>(eps), columns_for(isa),
                        at::get_num_threads()};
  decode_for(isa)(step);
  return y;
}

}  // namespace

TORCH_LIBRARY(twintee_q4, m) {
  m.def("mm(Tensor x, Tensor w, int kind, int isa) -> Tensor", &mm);
  m.def("prompt_mm(Tensor x, Tensor w, int kind, int isa) -> Tensor", &prompt_mm);
  m.def("decode_layers(Tensor x, Tensor[] ln1, Tensor[] wqkv, Tensor[] bqkv, Tensor[] wo, Tensor[] ln2, Tensor[] wgu, "
        "Tensor[] wdown, Tensor[] k_caches, Tensor[] v_caches, int[] positions, Tensor cos, Tensor sin, int heads, "
        "int kv_heads, int ffn, float eps, int isa) -> Tensor", &decode_layers);
  m.def("split_threads(int n, int m, int row_bytes) -> int", &split_threads);
  m.def("rows(Tensor w, Tensor ids, int kind) -> Tensor", &rows);
}
