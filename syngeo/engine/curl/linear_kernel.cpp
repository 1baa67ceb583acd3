// Full-batch epochs of linear curl-descent students on the CPU, many simulations at once
// (paper §3 eq. 3-5, §4.2 eq. 10, §5). Built on first use by syngeo/engine/curl/kernel.py;
// the eager torch epoch in simulator.py (_linear_epoch) is its reference and tests compare
// the two.
//
// Simulation i (of S = G groups x A simulations sharing one input second-moment matrix) has
// W1 (N x M), W2 (N), flips d1 (M), d2 (N) and a feedback vector b (W2 itself, or a fixed B
// for feedback alignment). With v = W2 W1, u = v - s (s = W2* W1*) and g = u Sigma, one epoch is
//     a  = W1 g^T,   y = g (.) d1,
//     W1 <- s1 (W1 - lr b^T y),   W2 <- s2 (W2 - lr a (.) d2),
// with s1, s2 the renormalisations back to the initial Frobenius norms. Why a kernel: torch
// needs three passes over W1 per epoch (W2 W1, W1 g^T, the update); here one pass reads each
// row of W1 once, forms a[n], writes the new row and accumulates the new v = W2' W1' and
// ||W1'||^2 from it, because ||W1 - lr b^T y||^2 = ||W1||^2 - 2 lr (b W1).y + lr^2 ||b||^2 ||y||^2
// is known before the pass. g for all simulations of a group is one matrix product (BLAS).
//
// A simulation whose W1 step is not finite or exceeds bound x its target norm keeps both
// layers and stops; one whose W1 step is fine but whose W2 step is not keeps the new W1 and
// the old W2 and stops (the torch reference does the same).

#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

template <typename T>
void run_epochs(at::Tensor& w1, at::Tensor& w2, const at::Tensor& fixed_feedback,
                bool feedback_is_w2, at::Tensor& v, at::Tensor& p, at::Tensor& norm_sq,
                const at::Tensor& sigma, const at::Tensor& s, const at::Tensor& d1,
                const at::Tensor& d2, const at::Tensor& target1, const at::Tensor& target2,
                at::Tensor& alive, at::Tensor& peak, double lr_d, double bound_d,
                double input_variance_d, bool renormalize, int64_t epochs) {
  const int64_t G = sigma.size(0), M = sigma.size(1), S = w1.size(0), N = w1.size(1);
  const int64_t A = S / G;
  const T lr = static_cast<T>(lr_d), input_variance = static_cast<T>(input_variance_d);
  at::Tensor u = at::empty({G, A, M}, w1.options());
  at::Tensor g = at::empty({G, A, M}, w1.options());
  std::vector<T> y(M), acc_v(M), acc_p(M), w2_step(N);

  T* W1 = w1.data_ptr<T>();
  T* W2 = w2.data_ptr<T>();
  const T* B = fixed_feedback.data_ptr<T>();
  T* V = v.data_ptr<T>();
  T* P = p.data_ptr<T>();                 // b W1: equal to v when b = W2
  double* NORM_SQ = norm_sq.data_ptr<double>();
  const T* Sv = s.data_ptr<T>();
  const T* D1 = d1.data_ptr<T>();
  const T* D2 = d2.data_ptr<T>();
  const T* T1 = target1.data_ptr<T>();
  const T* T2 = target2.data_ptr<T>();
  bool* ALIVE = alive.data_ptr<bool>();
  T* PEAK = peak.data_ptr<T>();
  T* U = u.data_ptr<T>();
  const T* Gr = g.data_ptr<T>();

  for (int64_t epoch = 0; epoch < epochs; ++epoch) {
    for (int64_t i = 0; i < S; ++i) {
      const T* vi = V + i * M;
      const T* si = Sv + (i / A) * M;
      T* ui = U + i * M;
      for (int64_t m = 0; m < M; ++m) ui[m] = vi[m] - si[m];
    }
    at::bmm_out(g, u, sigma);             // g = u Sigma, one product per group

    for (int64_t i = 0; i < S; ++i) {
      if (!ALIVE[i]) continue;
      const T* gi = Gr + i * M;
      const T* ui = U + i * M;
      const T* d1i = D1 + i * M;
      const T* d2i = D2 + i * N;
      T* vi = V + i * M;
      T* pi = P + i * M;
      T* w2i = W2 + i * N;
      const T* bi = feedback_is_w2 ? w2i : B + i * N;

      T uu = 0, py = 0, yy = 0, bb = 0;
#pragma omp simd reduction(+ : uu, py, yy)
      for (int64_t m = 0; m < M; ++m) {
        const T ym = gi[m] * d1i[m];
        y[m] = ym;
        uu += ui[m] * ui[m];
        py += pi[m] * ym;
        yy += ym * ym;
      }
      for (int64_t n = 0; n < N; ++n) bb += bi[n] * bi[n];
      // the largest population error seen: input_variance ||u||^2 before this epoch's step
      PEAK[i] = std::max(PEAK[i], input_variance * uu);

      const double norm1 = NORM_SQ[i] - 2.0 * lr * py + double(lr) * lr * bb * yy;
      const double limit1 = bound_d * T1[i];
      if (!std::isfinite(norm1) || norm1 >= limit1 * limit1) {
        ALIVE[i] = false;
        continue;
      }
      const T s1 = renormalize ? static_cast<T>(T1[i] / std::sqrt(std::max(norm1, 1e-30)))
                               : T(1);
      std::fill(acc_v.begin(), acc_v.end(), T(0));
      if (!feedback_is_w2) std::fill(acc_p.begin(), acc_p.end(), T(0));
      double new_norm_sq = 0, norm2 = 0;
      T* W1i = W1 + i * N * M;
      for (int64_t n = 0; n < N; ++n) {
        T* row = W1i + n * M;
        T a = 0;
#pragma omp simd reduction(+ : a)
        for (int64_t m = 0; m < M; ++m) a += row[m] * gi[m];
        const T w2n = w2i[n] - lr * a * d2i[n];   // unscaled: s2 needs every a[n]
        w2_step[n] = w2n;
        norm2 += double(w2n) * w2n;
        const T step = lr * bi[n];
        T row_sq = 0;
        if (feedback_is_w2) {
#pragma omp simd reduction(+ : row_sq)
          for (int64_t m = 0; m < M; ++m) {
            const T r = s1 * (row[m] - step * y[m]);
            row[m] = r;
            acc_v[m] += w2n * r;
            row_sq += r * r;
          }
        } else {
          const T bn = bi[n];
#pragma omp simd reduction(+ : row_sq)
          for (int64_t m = 0; m < M; ++m) {
            const T r = s1 * (row[m] - step * y[m]);
            row[m] = r;
            acc_v[m] += w2n * r;
            acc_p[m] += bn * r;
            row_sq += r * r;
          }
        }
        new_norm_sq += row_sq;
      }
      NORM_SQ[i] = new_norm_sq;
      const double limit2 = bound_d * T2[i];
      if (!std::isfinite(norm2) || norm2 >= limit2 * limit2) {
        ALIVE[i] = false;                 // W1 took its (finite) step; W2 keeps its last
        continue;
      }
      const T s2 = renormalize ? static_cast<T>(T2[i] / std::sqrt(std::max(norm2, 1e-30)))
                               : T(1);
      for (int64_t n = 0; n < N; ++n) w2i[n] = s2 * w2_step[n];
      for (int64_t m = 0; m < M; ++m) vi[m] = s2 * acc_v[m];
      const T* new_p = feedback_is_w2 ? vi : acc_p.data();
      std::copy(new_p, new_p + M, pi);
    }
  }
}

void linear_epochs(at::Tensor w1, at::Tensor w2, at::Tensor fixed_feedback, bool feedback_is_w2,
                   at::Tensor v, at::Tensor p, at::Tensor norm_sq, at::Tensor sigma,
                   at::Tensor s, at::Tensor d1, at::Tensor d2, at::Tensor target1,
                   at::Tensor target2, at::Tensor alive, at::Tensor peak, double lr,
                   double bound, double input_variance, bool renormalize, int64_t epochs) {
  const int64_t S = w1.size(0), N = w1.size(1), M = w1.size(2), G = sigma.size(0);
  TORCH_CHECK(w1.dim() == 3 && w1.is_contiguous() && w1.device().is_cpu(),
              "w1 must be a contiguous CPU tensor (S, N, M)");
  TORCH_CHECK(G > 0 && S % G == 0, "the simulations must split evenly into sigma's groups");
  TORCH_CHECK(sigma.sizes() == at::IntArrayRef({G, M, M}) && sigma.is_contiguous(),
              "sigma must be contiguous (G, M, M)");
  TORCH_CHECK(norm_sq.scalar_type() == at::kDouble && alive.scalar_type() == at::kBool,
              "norm_sq must be float64 and alive bool");
  for (const at::Tensor* t : {&w2, &fixed_feedback, &d2})
    TORCH_CHECK(t->sizes() == at::IntArrayRef({S, N}) && t->is_contiguous() &&
                t->scalar_type() == w1.scalar_type(), "per-neuron tensors must be (S, N)");
  for (const at::Tensor* t : {&v, &p, &d1})
    TORCH_CHECK(t->sizes() == at::IntArrayRef({S, M}) && t->is_contiguous() &&
                t->scalar_type() == w1.scalar_type(), "per-input tensors must be (S, M)");
  TORCH_CHECK(s.sizes() == at::IntArrayRef({G, M}) && s.is_contiguous(), "s must be (G, M)");
  for (const at::Tensor* t : {&target1, &target2, &peak, &norm_sq, &alive})
    TORCH_CHECK(t->numel() == S && t->is_contiguous(), "per-simulation tensors must be (S)");
  if (w1.scalar_type() == at::kFloat) {
    run_epochs<float>(w1, w2, fixed_feedback, feedback_is_w2, v, p, norm_sq, sigma, s, d1, d2,
                      target1, target2, alive, peak, lr, bound, input_variance, renormalize,
                      epochs);
  } else {
    TORCH_CHECK(w1.scalar_type() == at::kDouble, "float32 or float64 only");
    run_epochs<double>(w1, w2, fixed_feedback, feedback_is_w2, v, p, norm_sq, sigma, s, d1,
                       d2, target1, target2, alive, peak, lr, bound, input_variance,
                       renormalize, epochs);
  }
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  // without the GIL, so the simulator's threads each run a block on their own core
  m.def("linear_epochs", &linear_epochs, pybind11::call_guard<pybind11::gil_scoped_release>());
}
