// MU's 16 block attentions (2 heads of size 2 each: 32 causal heads of size 2) on the fused QKV
// projection's output, forward and backward. qkv is (B, T, 3 * H * 2) laid out [q | k | v], each
// head-major; y is (B, T, H * 2), head h at columns 2h, 2h + 1: no head split or merge copies.
// One pass per query row with its scores in registers, vectorised over keys: at head size 2,
// SDPA's general kernel spends most of its time in tiny GEMM calls.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cmath>
#include <vector>

std::vector<torch::Tensor> forward(torch::Tensor qkv, int64_t H, double scale) {
  TORCH_CHECK(qkv.dim() == 3 && qkv.size(2) == 6 * H && qkv.scalar_type() == torch::kFloat,
              "qkv must be (B, T, 6H) float32");
  qkv = qkv.contiguous();
  const int64_t B = qkv.size(0), T = qkv.size(1), W = 6 * H;
  auto y = torch::empty({B, T, 2 * H}, qkv.options());
  auto lse = torch::empty({B, H, T}, qkv.options());
  const float* x = qkv.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  float* lp = lse.data_ptr<float>();
  const float sc = static_cast<float>(scale);
  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> buf(5 * T);
    float *k0 = buf.data(), *k1 = k0 + T, *v0 = k1 + T, *v1 = v0 + T, *s = v1 + T;
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      const float* xb = x + b * T * W;
      for (int64_t t = 0; t < T; ++t) {
        const float* row = xb + t * W;
        k0[t] = row[2 * H + 2 * h]; k1[t] = row[2 * H + 2 * h + 1];
        v0[t] = row[4 * H + 2 * h]; v1[t] = row[4 * H + 2 * h + 1];
      }
      for (int64_t i = 0; i < T; ++i) {
        const float a = xb[i * W + 2 * h] * sc, c = xb[i * W + 2 * h + 1] * sc;
        float m = -INFINITY;
#pragma omp simd reduction(max : m)
        for (int64_t j = 0; j <= i; ++j) { s[j] = a * k0[j] + c * k1[j]; m = s[j] > m ? s[j] : m; }
        float l = 0.f, y0 = 0.f, y1 = 0.f;
#pragma omp simd reduction(+ : l, y0, y1)
        for (int64_t j = 0; j <= i; ++j) {
          const float p = expf(s[j] - m);
          l += p; y0 += p * v0[j]; y1 += p * v1[j];
        }
        float* out = yp + (b * T + i) * 2 * H + 2 * h;
        out[0] = y0 / l; out[1] = y1 / l;
        lp[bh * T + i] = m + logf(l);
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
    std::vector<float> buf(8 * T);
    float *k0 = buf.data(), *k1 = k0 + T, *v0 = k1 + T, *v1 = v0 + T;
    float *dk0 = v1 + T, *dk1 = dk0 + T, *dv0 = dk1 + T, *dv1 = dv0 + T;
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
        float dqa = 0.f, dqc = 0.f;
#pragma omp simd reduction(+ : dqa, dqc)
        for (int64_t j = 0; j <= i; ++j) {
          const float p = expf(a * k0[j] + c * k1[j] - L);
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
