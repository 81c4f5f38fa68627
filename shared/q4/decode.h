// One decode step of a node's decoder layers in a single call (issue 17): every sequence brings one
// new token. Between the q4 projections, the norms, rotary embedding, attention against each
// sequence's cache and the MLP's activation run here too, so a step is one call, not ~400 torch ops
// (each 5-100 us: at one row they cost more than the weights' bytes).
//
// Each row is computed alone in a fixed order whatever the other rows, the thread count or the ISA
// (the projections by lanes.h, everything else by plain C++ compiled with -ffp-contract=off and no
// reassociation): a sequence's tokens are the same alone, batched, or replayed into a new node2.
#pragma once
#include <cstdint>

#include "lanes.h"

namespace q4 {

struct LayerWeights {
  const float* ln1;      // [D]
  const uint8_t* wqkv;   // Q4_1 [(H + 2 Hkv) hd, D]
  const float* bqkv;     // [(H + 2 Hkv) hd] or null (Qwen2 only)
  const uint8_t* wo;     // Q4_1 [D, H hd]
  const float* ln2;      // [D]
  const uint8_t* wgu;    // Q4_1 [2F, D]: gate rows, then up rows
  const uint8_t* wdown;  // Q4_1 [D, F]
};

struct Row {
  float* k;          // this row's session cache, [L, Hkv, C, hd]
  float* v;
  int64_t capacity;  // C
  int64_t pos;       // the new token's position: keys [0, pos] are attended after it is written
};

struct Decode {
  float* x;  // [N, D] hidden states in, the last layer's out
  int64_t n;
  const LayerWeights* layers;
  int64_t n_layers;
  const Row* rows;  // [N]
  const float* cos;  // [P, hd]
  const float* sin;
  int64_t d, heads, kv_heads, head_dim, ffn;
  float eps;
  Columns columns;  // the ISA's projection path
  int threads;
};

// One build of decode.cpp per ISA (build.py), each for the CPUs with its vector extensions; the same bits.
using DecodeLayers = void (*)(const Decode& step);
void decode_layers_avx512(const Decode& step);
void decode_layers_avx2(const Decode& step);
void decode_layers_scalar(const Decode& step);

}  // namespace q4
