// The row-cached PixelCNN walker: plain C++ types shared by the CPU and CUDA
// implementations (no torch headers, so the .cu file includes only the CUDA runtime).
//
// One routine does all three jobs of the engine. A "job" is one configuration walked
// site by site in row-major order from a start site; for every site it evaluates only
// what the site needs (each block's horizontal branch at that one position, from
// cached activations of the last rows), the output 1x1 layer, and the normalized
// conditional; at the end of each row it evaluates every block's vertical branch for
// the whole row. That is exactly one forward pass of work per walked configuration.
//
//   kSample      job = sample b, start 0: draw site i with uniform u[b, i]
//                (+1 iff u < |psi_i(+1)|^2, computed in the model dtype like
//                PixelCNN.sample_reference), return spins and log psi; optionally
//                keep the storage as kForward does (the local energy's input).
//   kForward     job = sample b, start 0, spins given: log psi; optionally keep every
//                activation (h_l, v_l at every site) plus raw outputs and the float64
//                prefix sums P_i = sum_{j<i} log psi_j(s_j) ("storage").
//   kConnected   job = (sample b, connection m) with first flipped site k; jobs sorted
//                by k. Walks s' = s with the flips applied from site k only: activations
//                of positions before k are read from s's storage (they are equal), the
//                rest go to a 3-row ring. Output P_k(s) + sum_{i>=k} log psi_i(s'_i)
//                accumulated in float64: the common prefix is exactly s's. Only the
//                activations in the light cone of the flips (cone.h) are computed;
//                the others are read from s's storage too.
//
// Weight layout (repacked by the front end from PixelCNN.packed_weights(); C4 = C
// rounded up to a multiple of 4, padding columns zero; k = tap * Cin + c with
// tap = 3 * dy + dx):
//   wv0 [9][1][C4], wv [L-1][9][C][C4], bv [L][C]
//   wh0 [9][1+C][C4], wh [L-1][9][2C][C4], bh [L][C]   (horizontal inputs: h_{l-1}, then down(v_l))
//   wo  [C][4], bo [4]
// Activation buffers are sample-major: [L][R][Lx][C] per job, R = Ly for storage and
// 3 for a ring (row r lives in slot r % R).
#pragma once

#include <cstdint>

namespace naqs {
namespace pixelcnn {

enum Mode : int { kSample = 0, kForward = 1, kConnected = 2 };

struct Dims {
  int lx, ly, n_sites;  // lattice; sites x + lx * y
  int blocks;           // L >= 1
  int channels;         // C >= 1
  int c4;               // C rounded up to a multiple of 4
  int target_up;        // number of up spins of the sector, or -1 for none
};

template <typename T>
struct Weights {
  const T* wv0;  // [9][1][C4]
  const T* wv;   // [L-1][9][C][C4]
  const T* bv;   // [L][C]
  const T* wh0;  // [9][1+C][C4]
  const T* wh;   // [L-1][9][2C][C4]
  const T* bh;   // [L][C]
  const T* wo;   // [C][4]
  const T* bo;   // [4]
};

// Everything a walk reads and writes. Unused pointers are null.
template <typename T>
struct WalkArgs {
  int mode;
  int64_t n_jobs;
  // kSample
  const double* uniforms;  // [B, N]
  int8_t* spins_out;       // [B, N]
  // kForward / kConnected
  const int8_t* spins;  // [B, N]
  // kForward, kSample: log psi of the job, (re, im) pairs
  double* log_psi;  // [B, 2]
  // kForward / kSample with storage (all null when not kept); read by kConnected
  T* store_h;         // [B][L][Ly][Lx][C]
  T* store_v;         // [B][L][Ly][Lx][C]
  double* prefix;     // [B][N + 1][2]: P_i = sum_{j<i} log psi_j(s_j)
  // kConnected
  const int64_t* jobs;   // [n_jobs, 3]: (b, m, k), sorted by k
  const int64_t* flips;  // [B, M, 2]
  int64_t n_conn;        // M
  double* out;           // [B, M, 2]
  int no_cone;           // 0: walk only the light cone of the flips (cone.h); 1: everything from k on
  // kConnected: the storage was written by the sampler (pixelcnn_sample with
  // keep_activations), not by this call's forward walk, and holds n_stored samples (the
  // CUDA wgmma passes read activations in their own stored form: they take such walks
  // only with NAQS_PIXELCNN_WG_ROUND=3, biasing the storage for the walk, see walker.cu)
  int kept_storage;
  int64_t n_stored;
};

}  // namespace pixelcnn
}  // namespace naqs
