// MU's 16 block attentions (2 heads of size 2 each: 32 causal heads of size 2) on the fused QKV
// projection's output, forward and backward. qkv is (B, T, 3 * H * 2) laid out [q | k | v], each
// head-major; y is (B, T, H * 2), head h at columns 2h, 2h + 1: no head split or merge copies.
// One pass per query row with its scores in registers, vectorised over keys: at head size 2,
// SDPA's general kernel spends most of its time in tiny GEMM calls.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cmath>
#include <vector>

// Loops over keys 0..i run to the next multiple of 8 (buffers padded with zeros) with the keys past i
// masked to probability 0: no scalar remainder loops (a scalar expf there cost as much as the vector part).
namespace {
constexpr int64_t LANES = 8;
inline int64_t padded(int64_t n) { return (n + LANES - 1) / LANES * LANES; }
constexpr float FAR = -1e30f;  // a score that no key reaches: excluded from the row's maximum
}  // namespace

// Queries are rows past..S-1 of qkv's S rows (past > 0: cached generation, keys and values of every row).
std::vector<torch::Tensor> forward(torch::Tensor qkv, int64_t H, double scale, int64_t past) {
  TORCH_CHECK(qkv.dim() == 3 && qkv.size(2) == 6 * H && qkv.scalar_type() == torch::kFloat,
              "qkv must be (B, T, 6H) float32");
  qkv = qkv.contiguous();
  const int64_t B = qkv.size(0), S = qkv.size(1), W = 6 * H, T = S - past;
  TORCH_CHECK(past >= 0 && T >= 1, "past must leave at least one query row");
  auto y = torch::empty({B, T, 2 * H}, qkv.options());
  auto lse = torch::empty({B, H, T}, qkv.options());
  const float* x = qkv.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  float* lp = lse.data_ptr<float>();
  const float sc = static_cast<float>(scale);
  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    const int64_t Sp = padded(S);
    std::vector<float> buf(5 * Sp, 0.f);
    float *k0 = buf.data(), *k1 = k0 + Sp, *v0 = k1 + Sp, *v1 = v0 + Sp, *s = v1 + Sp;
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      const float* xb = x + b * S * W;
      for (int64_t t = 0; t < S; ++t) {
        const float* row = xb + t * W;
        k0[t] = row[2 * H + 2 * h]; k1[t] = row[2 * H + 2 * h + 1];
        v0[t] = row[4 * H + 2 * h]; v1[t] = row[4 * H + 2 * h + 1];
      }
      for (int64_t i = past; i < S; ++i) {
        const float a = xb[i * W + 2 * h] * sc, c = xb[i * W + 2 * h + 1] * sc;
        const int64_t n = i + 1, np = padded(n);
        float m = FAR;
#pragma omp simd reduction(max : m)
        for (int64_t j = 0; j < np; ++j) {
          s[j] = a * k0[j] + c * k1[j];
          const float sj = j < n ? s[j] : FAR;
          m = sj > m ? sj : m;
        }
        float l = 0.f, y0 = 0.f, y1 = 0.f;
#pragma omp simd reduction(+ : l, y0, y1)
        for (int64_t j = 0; j < np; ++j) {
          const float e = expf(fminf(s[j] - m, 0.f));
          const float p = j < n ? e : 0.f;
          l += p; y0 += p * v0[j]; y1 += p * v1[j];
        }
        float* out = yp + (b * T + i - past) * 2 * H + 2 * h;
        out[0] = y0 / l; out[1] = y1 / l;
        lp[bh * T + i - past] = m + logf(l);
      }
    }
  });
  return {y, lse};
}

torch::Tensor backward(torch::Tensor dy, torch::Tensor qkv, torch::Tensor y, torch::Tensor lse, int64_t H,
                       double scale) {
  dy = dy.contiguous();
  const int64_t B = qkv.size(0), T = qkv.size(1), W = 6 * H;
  auto dqkv = torch::empty_like(qkv);
  const float *x = qkv.data_ptr<float>(), *yp = y.data_ptr<float>(), *lp = lse.data_ptr<float>();
  const float* gp = dy.data_ptr<float>();
  float* dx = dqkv.data_ptr<float>();
  const float sc = static_cast<float>(scale);
  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    const int64_t Tp = padded(T);
    std::vector<float> buf(8 * Tp, 0.f);
    float *k0 = buf.data(), *k1 = k0 + Tp, *v0 = k1 + Tp, *v1 = v0 + Tp;
    float *dk0 = v1 + Tp, *dk1 = dk0 + Tp, *dv0 = dk1 + Tp, *dv1 = dv0 + Tp;
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      const float* xb = x + b * T * W;
      float* dxb = dx + b * T * W;
      for (int64_t t = 0; t < T; ++t) {
        const float* row = xb + t * W;
        k0[t] = row[2 * H + 2 * h]; k1[t] = row[2 * H + 2 * h + 1];
        v0[t] = row[4 * H + 2 * h]; v1[t] = row[4 * H + 2 * h + 1];
        dk0[t] = dk1[t] = dv0[t] = dv1[t] = 0.f;
      }
      for (int64_t i = 0; i < T; ++i) {
        const int64_t r = (b * T + i) * 2 * H + 2 * h;
        const float a = xb[i * W + 2 * h] * sc, c = xb[i * W + 2 * h + 1] * sc, g0 = gp[r], g1 = gp[r + 1];
        const float D = g0 * yp[r] + g1 * yp[r + 1], L = lp[bh * T + i];
        const int64_t n = i + 1, np = padded(n);
        float dqa = 0.f, dqc = 0.f;
#pragma omp simd reduction(+ : dqa, dqc)
        for (int64_t j = 0; j < np; ++j) {
          const float e = expf(fminf(a * k0[j] + c * k1[j] - L, 0.f));
          const float p = j < n ? e : 0.f;
          const float ds = p * (g0 * v0[j] + g1 * v1[j] - D);
          dqa += ds * k0[j]; dqc += ds * k1[j];
          dk0[j] += ds * a; dk1[j] += ds * c;
          dv0[j] += p * g0; dv1[j] += p * g1;
        }
        dxb[i * W + 2 * h] = dqa * sc; dxb[i * W + 2 * h + 1] = dqc * sc;
      }
      for (int64_t t = 0; t < T; ++t) {
        float* row = dxb + t * W;
        row[2 * H + 2 * h] = dk0[t]; row[2 * H + 2 * h + 1] = dk1[t];
        row[4 * H + 2 * h] = dv0[t]; row[4 * H + 2 * h + 1] = dv1[t];
      }
    }
  });
  return dqkv;
}

// MU's cross-block attention (8 causal heads of size 8) with the entropy of its head-averaged attention,
// which the gate reads: qkv (B, T, 192) [q | k | v] head-major -> y (B, T, 64), entropy (B, T), and
// each head's log-sum-exp (B, 8, T) for the backward. Per query row the 8 heads' probabilities stay in a
// small buffer: nothing of size T x T is written, where the explicit form writes and reads several.
namespace {
constexpr int64_t CH = 8, CD = 8, CW = CH * CD;
constexpr float EPS = 1e-9f;

// Transposed keys and values of one sequence of T rows: kt[(h * CD + c) * stride + j].
void transpose_kv(const float* xb, int64_t T, int64_t stride, float* kt, float* vt) {
  for (int64_t t = 0; t < T; ++t) {
    const float* row = xb + t * 3 * CW;
    for (int64_t hc = 0; hc < CW; ++hc) { kt[hc * stride + t] = row[CW + hc]; vt[hc * stride + t] = row[2 * CW + hc]; }
  }
}

// Scores of a query row (already scaled) against keys 0..np-1 for head h, into s.
inline void scores(const float* q, const float* kt, int64_t stride, int64_t h, int64_t np, float* s) {
  for (int64_t j = 0; j < np; ++j) s[j] = 0.f;
  for (int64_t c = 0; c < CD; ++c) {
    const float qc = q[h * CD + c];
    const float* k = kt + (h * CD + c) * stride;
#pragma omp simd
    for (int64_t j = 0; j < np; ++j) s[j] += qc * k[j];
  }
}
}  // namespace

std::vector<torch::Tensor> cross_forward(torch::Tensor qkv, double scale, int64_t past) {
  TORCH_CHECK(qkv.dim() == 3 && qkv.size(2) == 3 * CW && qkv.scalar_type() == torch::kFloat,
              "qkv must be (B, T, 192) float32");
  qkv = qkv.contiguous();
  const int64_t B = qkv.size(0), S = qkv.size(1), T = S - past;
  TORCH_CHECK(past >= 0 && T >= 1, "past must leave at least one query row");
  auto y = torch::empty({B, T, CW}, qkv.options());
  auto entropy = torch::empty({B, T}, qkv.options());
  auto lse = torch::empty({B, CH, T}, qkv.options());
  const float* x = qkv.data_ptr<float>();
  float *yp = y.data_ptr<float>(), *ep = entropy.data_ptr<float>(), *lp = lse.data_ptr<float>();
  const float sc = static_cast<float>(scale);
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    const int64_t Sp = padded(S);
    std::vector<float> buf(2 * CW * Sp + (CH + 1) * Sp, 0.f);
    float *kt = buf.data(), *vt = kt + CW * Sp, *P = vt + CW * Sp, *pbar = P + CH * Sp;
    for (int64_t b = begin; b < end; ++b) {
      const float* xb = x + b * S * 3 * CW;
      transpose_kv(xb, S, Sp, kt, vt);
      for (int64_t i = past; i < S; ++i) {
        const int64_t n = i + 1, np = padded(n), r = i - past;
        float q[CW];
        for (int64_t hc = 0; hc < CW; ++hc) q[hc] = xb[i * 3 * CW + hc] * sc;
        for (int64_t j = 0; j < np; ++j) pbar[j] = 0.f;
        for (int64_t h = 0; h < CH; ++h) {
          float* p = P + h * Sp;
          scores(q, kt, Sp, h, np, p);
          float m = FAR;
#pragma omp simd reduction(max : m)
          for (int64_t j = 0; j < np; ++j) { const float sj = j < n ? p[j] : FAR; m = sj > m ? sj : m; }
          float l = 0.f;
#pragma omp simd reduction(+ : l)
          for (int64_t j = 0; j < np; ++j) {
            const float e = expf(fminf(p[j] - m, 0.f));
            p[j] = j < n ? e : 0.f;
            l += p[j];
          }
          const float inv = 1.f / l;
#pragma omp simd
          for (int64_t j = 0; j < np; ++j) { p[j] *= inv; pbar[j] += p[j] * (1.f / CH); }
          lp[(b * CH + h) * T + r] = m + logf(l);
          for (int64_t c = 0; c < CD; ++c) {
            const float* v = vt + (h * CD + c) * Sp;
            float acc = 0.f;
#pragma omp simd reduction(+ : acc)
            for (int64_t j = 0; j < np; ++j) acc += p[j] * v[j];
            yp[(b * T + r) * CW + h * CD + c] = acc;
          }
        }
        float e = 0.f;
#pragma omp simd reduction(+ : e)
        for (int64_t j = 0; j < np; ++j) e -= pbar[j] * logf(pbar[j] + EPS);
        ep[b * T + r] = e;
      }
    }
  });
  return {y, entropy, lse};
}

torch::Tensor cross_backward(torch::Tensor dy, torch::Tensor dentropy, torch::Tensor qkv, torch::Tensor lse,
                             double scale) {
  dy = dy.contiguous(); dentropy = dentropy.contiguous();
  const int64_t B = qkv.size(0), T = qkv.size(1);
  auto dqkv = torch::zeros_like(qkv);
  const float *x = qkv.data_ptr<float>(), *lp = lse.data_ptr<float>(), *gp = dy.data_ptr<float>();
  const float* dep = dentropy.data_ptr<float>();
  float* dx = dqkv.data_ptr<float>();
  const float sc = static_cast<float>(scale);
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    const int64_t Tp = padded(T);
    std::vector<float> buf(4 * CW * Tp + (CH + 2) * Tp, 0.f);
    float *kt = buf.data(), *vt = kt + CW * Tp, *dkt = vt + CW * Tp, *dvt = dkt + CW * Tp;
    float *P = dvt + CW * Tp, *g = P + CH * Tp, *dp = g + Tp;
    for (int64_t b = begin; b < end; ++b) {
      const float* xb = x + b * T * 3 * CW;
      float* dxb = dx + b * T * 3 * CW;
      transpose_kv(xb, T, Tp, kt, vt);
      for (int64_t j = 0; j < 2 * CW * Tp; ++j) dkt[j] = 0.f;
      for (int64_t i = 0; i < T; ++i) {
        const int64_t n = i + 1, np = padded(n);
        float q[CW], gy[CW];
        for (int64_t hc = 0; hc < CW; ++hc) { q[hc] = xb[i * 3 * CW + hc] * sc; gy[hc] = gp[(b * T + i) * CW + hc]; }
        for (int64_t j = 0; j < np; ++j) g[j] = 0.f;
        for (int64_t h = 0; h < CH; ++h) {  // probabilities again, from the saved log-sum-exp
          float* p = P + h * Tp;
          scores(q, kt, Tp, h, np, p);
          const float L = lp[(b * CH + h) * T + i];
#pragma omp simd
          for (int64_t j = 0; j < np; ++j) {
            const float e = expf(fminf(p[j] - L, 0.f));
            p[j] = j < n ? e : 0.f;
            g[j] += p[j] * (1.f / CH);
          }
        }
        // d entropy / d p_hj = -(log(pbar_j + eps) + pbar_j / (pbar_j + eps)) / H, times the entropy's gradient
        const float de = dep[b * T + i] * (-1.f / CH);
#pragma omp simd
        for (int64_t j = 0; j < np; ++j) g[j] = de * (logf(g[j] + EPS) + g[j] / (g[j] + EPS));
        for (int64_t h = 0; h < CH; ++h) {
          const float* p = P + h * Tp;
#pragma omp simd
          for (int64_t j = 0; j < np; ++j) dp[j] = g[j];
          for (int64_t c = 0; c < CD; ++c) {
            const float gc = gy[h * CD + c];
            const float* v = vt + (h * CD + c) * Tp;
            float* dv = dvt + (h * CD + c) * Tp;
#pragma omp simd
            for (int64_t j = 0; j < np; ++j) { dp[j] += gc * v[j]; dv[j] += p[j] * gc; }
          }
          float rowsum = 0.f;
#pragma omp simd reduction(+ : rowsum)
          for (int64_t j = 0; j < np; ++j) rowsum += p[j] * dp[j];
#pragma omp simd
          for (int64_t j = 0; j < np; ++j) dp[j] = p[j] * (dp[j] - rowsum);  // now d score
          for (int64_t c = 0; c < CD; ++c) {
            const float* k = kt + (h * CD + c) * Tp;
            float* dk = dkt + (h * CD + c) * Tp;
            const float qc = q[h * CD + c];
            float acc = 0.f;
#pragma omp simd reduction(+ : acc)
            for (int64_t j = 0; j < np; ++j) { acc += dp[j] * k[j]; dk[j] += dp[j] * qc; }
            dxb[i * 3 * CW + h * CD + c] = acc * sc;
          }
        }
      }
      for (int64_t t = 0; t < T; ++t) {
        float* row = dxb + t * 3 * CW;
        for (int64_t hc = 0; hc < CW; ++hc) { row[CW + hc] = dkt[hc * Tp + t]; row[2 * CW + hc] = dvt[hc * Tp + t]; }
      }
    }
  });
  return dqkv;
}

// Cached generation: one new position of B sequences through every MU layer in one call. At one token
// a layer is some twenty tiny operations; from Python each costs its dispatch (~5-10 us), several times
// its arithmetic. Here the same ATen operations run in the order MULayer.forward runs them (same
// results), with the two attentions read from the layers' projection-row caches. x: (B, 64) the
// embedded token; idx: (B,) its id (the gate's affinity); weights: LAYER_WEIGHTS tensors per layer in
// the order mu/decode.py lists them (an empty block QKV weight: block attention off); rows: each
// layer's block-attention and cross-attention row buffers (B, capacity > past, 192), in turn; row `past`
// is written. Returns the last layer's output (B, 64).
namespace {
constexpr int64_t LAYER_WEIGHTS = 22;
}  // namespace

torch::Tensor decode(torch::Tensor x, torch::Tensor idx, std::vector<torch::Tensor> weights,
                     std::vector<torch::Tensor> rows, int64_t past) {
  const int64_t layers = static_cast<int64_t>(rows.size()) / 2, B = x.size(0);
  TORCH_CHECK(static_cast<int64_t>(weights.size()) == layers * LAYER_WEIGHTS && x.dim() == 2 && x.size(1) == CW,
              "decode: weights, row buffers and x (B, 64) do not match");
  for (int64_t l = 0; l < layers; ++l) {
    const torch::Tensor* w = weights.data() + l * LAYER_WEIGHTS;
    torch::Tensor& block_rows = rows[2 * l];
    torch::Tensor& cross_rows = rows[2 * l + 1];
    TORCH_CHECK(cross_rows.size(1) > past && (w[0].numel() == 0 || block_rows.size(1) > past),
                "decode: a row buffer has no room for position ", past);
    torch::Tensor blocks = x;
    if (w[0].numel() > 0) {
      block_rows.select(1, past).copy_(at::addmm(w[1], x, w[0].t()));
      auto y = forward(block_rows.narrow(1, 0, past + 1), 2 * 16, 1 / std::sqrt(2.0), past)[0];
      blocks = at::addmm(w[3], y.view({B, CW}), w[2].t());
    }
    cross_rows.select(1, past).copy_(at::addmm(w[5], blocks, w[4].t()));
    auto cross = cross_forward(cross_rows.narrow(1, 0, past + 1), 1 / std::sqrt(8.0), past);
    auto attn = at::addmm(w[7], cross[0].view({B, CW}), w[6].t());
    auto z = at::layer_norm(x + attn, {CW}, w[8], w[9], 1e-5);
    auto hidden = at::gelu(at::addmm(w[11], z, w[10].t()));
    z = at::layer_norm(z + at::addmm(w[13], hidden, w[12].t()), {CW}, w[14], w[15], 1e-5);
    auto features = at::cat({w[16].index_select(0, idx), cross[1].view({B, 1})}, 1);
    auto gate = at::addmm(w[21], at::gelu(at::addmm(w[19], features, w[18].t())), w[20].t());
    auto strength = w[17] * at::sigmoid(gate);
    x = at::lerp(x.view({B, 16, 4}), z.view({B, 16, 4}), strength.unsqueeze(-1)).view({B, CW});
  }
  return x;
}
