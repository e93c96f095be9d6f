// The chunk step of chunk.py (one fast-weight matrix over one chunk) fused per batch entry, forward
// and backward, for CPU tensors. Loaded by fused.py; chunk.py's ``chunk_step`` is its reference and
// the tests compare the two (values and gradients, float64).
//
// Per batch entry i (row convention, row-major):
//   KS = K S (or given), Km = K m
//   rhs = cg ⊙ KS + BW W + cr ⊙ Km            (cg = b γ⁻, cr = b ρ⁻ per row; BW = b ⊙ (K Kᵀ ∘ G⁻))
//   U = L⁻¹ rhs, L = I + strict_lower(T)       (the UT transform's unit lower triangular solve)
//   X = wlast ⊙ W − glast ⊙ U                  (wlast: G[n,:] with momentum, else glast; no
//                                              preconditioner: U = 0)
//   S' = gL S + rL m + Kᵀ X,  m' = dL m + Kᵀ (dlast ⊙ W)
// The backward recomputes KS, Km, U from the inputs (nothing n × Dv is saved) and keeps each entry's
// state, momentum and their gradients in cache while it forms every product that touches them.

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <vector>

extern "C" {
void sgemm_(const char*, const char*, const int*, const int*, const int*, const float*, const float*,
            const int*, const float*, const int*, const float*, float*, const int*);
void dgemm_(const char*, const char*, const int*, const int*, const int*, const double*, const double*,
            const int*, const double*, const int*, const double*, double*, const int*);
}

namespace {

inline void blas(const char* ta, const char* tb, int m, int n, int k, float alpha, const float* a, int lda,
                 const float* b, int ldb, float beta, float* c, int ldc) {
  sgemm_(ta, tb, &m, &n, &k, &alpha, a, &lda, b, &ldb, &beta, c, &ldc);
}
inline void blas(const char* ta, const char* tb, int m, int n, int k, double alpha, const double* a, int lda,
                 const double* b, int ldb, double beta, double* c, int ldc) {
  dgemm_(ta, tb, &m, &n, &k, &alpha, a, &lda, b, &ldb, &beta, c, &ldc);
}

// Row-major C[m×n] = alpha · op(A) op(B) + beta · C, op(A) m×k, op(B) k×n; ta/tb: is A/B transposed.
// A column-major BLAS sees a row-major matrix as its transpose, so it computes Cᵀ = op(B)ᵀ op(A)ᵀ.
template <typename T>
inline void mm(bool ta, bool tb, int m, int n, int k, T alpha, const T* A, int lda, const T* B, int ldb,
               T beta, T* C, int ldc) {
  blas(tb ? "T" : "N", ta ? "T" : "N", n, m, k, alpha, B, ldb, A, lda, beta, C, ldc);
}

template <typename T>
struct Entry {  // pointers to batch entry i of every input
  const T *S, *m, *W, *K, *KS, *cg, *cr, *Tm, *BW, *glast, *wlast, *dlast;
  T gL, rL, dL;
};

struct Dims {
  int n, Dk, Dv;
  bool mom, pre, ks_given;
};

// rhs, U (in place in u), X; KS and Km into ks / km when computed here
template <typename T>
void solve_chunk(const Entry<T>& e, const Dims& d, T* ks, T* km, T* u, T* x) {
  const int n = d.n, Dk = d.Dk, Dv = d.Dv;
  if (d.pre) {
    const T* KS = e.KS;
    if (!d.ks_given) {
      mm<T>(false, false, n, Dv, Dk, T(1), e.K, Dk, e.S, Dv, T(0), ks, Dv);
      KS = ks;
    }
    mm<T>(false, false, n, Dv, n, T(1), e.BW, n, e.W, Dv, T(0), u, Dv);  // BW W
    if (d.mom) mm<T>(false, false, n, Dv, Dk, T(1), e.K, Dk, e.m, Dv, T(0), km, Dv);
    for (int t = 0; t < n; ++t) {
      T* ut = u + t * Dv;
      const T c = e.cg[t];
      const T* kst = KS + t * Dv;
#pragma omp simd
      for (int j = 0; j < Dv; ++j) ut[j] += c * kst[j];
      if (d.mom) {
        const T r = e.cr[t];
        const T* kmt = km + t * Dv;
#pragma omp simd
        for (int j = 0; j < Dv; ++j) ut[j] += r * kmt[j];
      }
      for (int s = 0; s < t; ++s) {  // forward substitution, unit diagonal
        const T l = e.Tm[t * n + s];
        const T* us = u + s * Dv;
#pragma omp simd
        for (int j = 0; j < Dv; ++j) ut[j] -= l * us[j];
      }
    }
  }
  for (int t = 0; t < n; ++t) {
    const T g = e.glast[t], gw = e.wlast[t];
    const T* wt = e.W + t * Dv;
    T* xt = x + t * Dv;
    if (d.pre) {
      const T* ut = u + t * Dv;
#pragma omp simd
      for (int j = 0; j < Dv; ++j) xt[j] = gw * wt[j] - g * ut[j];
    } else {
#pragma omp simd
      for (int j = 0; j < Dv; ++j) xt[j] = gw * wt[j];
    }
  }
}

template <typename T>
Entry<T> entry(int64_t i, const Dims& d, const torch::Tensor& S, const torch::Tensor& m, const torch::Tensor& W,
               const torch::Tensor& K, const torch::Tensor& KS, const torch::Tensor& cg, const torch::Tensor& cr,
               const torch::Tensor& Tm, const torch::Tensor& BW, const torch::Tensor& glast,
               const torch::Tensor& wlast, const torch::Tensor& gL, const torch::Tensor& rL, const torch::Tensor& dL,
               const torch::Tensor& dlast) {
  const int64_t n = d.n, Dk = d.Dk, Dv = d.Dv;
  Entry<T> e{};
  e.S = S.data_ptr<T>() + i * Dk * Dv;
  e.W = W.data_ptr<T>() + i * n * Dv;
  e.K = K.data_ptr<T>() + i * n * Dk;
  e.glast = glast.data_ptr<T>() + i * n;
  e.wlast = wlast.numel() > 0 ? wlast.data_ptr<T>() + i * n : e.glast;
  e.gL = gL.data_ptr<T>()[i];
  if (d.mom) {
    e.m = m.data_ptr<T>() + i * Dk * Dv;
    e.dlast = dlast.data_ptr<T>() + i * n;
    e.rL = rL.data_ptr<T>()[i];
    e.dL = dL.data_ptr<T>()[i];
  }
  if (d.pre) {
    e.cg = cg.data_ptr<T>() + i * n;
    e.Tm = Tm.data_ptr<T>() + i * n * n;
    e.BW = BW.data_ptr<T>() + i * n * n;
    if (d.ks_given) e.KS = KS.data_ptr<T>() + i * n * Dv;
    if (d.mom) e.cr = cr.data_ptr<T>() + i * n;
  }
  return e;
}

Dims dims(const torch::Tensor& S, const torch::Tensor& m, const torch::Tensor& W, const torch::Tensor& KS,
          const torch::Tensor& cg) {
  return Dims{static_cast<int>(W.size(1)), static_cast<int>(S.size(1)), static_cast<int>(S.size(2)),
              m.numel() > 0, cg.numel() > 0, KS.numel() > 0};
}

}  // namespace

#define CHUNK_ARGS                                                                                        \
  const torch::Tensor &S, const torch::Tensor &m, const torch::Tensor &W, const torch::Tensor &K,                 \
      const torch::Tensor &KS, const torch::Tensor &cg, const torch::Tensor &cr, const torch::Tensor &Tm,         \
      const torch::Tensor &BW, const torch::Tensor &glast, const torch::Tensor &wlast, const torch::Tensor &gL,  \
      const torch::Tensor &rL, const torch::Tensor &dL, const torch::Tensor &dlast

template <typename T>
void forward_impl(CHUNK_ARGS, const Dims& d, torch::Tensor& S_new, torch::Tensor& m_new) {
  const int64_t N = S.size(0);
  const int n = d.n, Dk = d.Dk, Dv = d.Dv;
  at::parallel_for(0, N, 1, [&](int64_t lo, int64_t hi) {
    std::vector<T> ks(n * Dv), km(n * Dv), u(n * Dv), x(n * Dv);
    for (int64_t i = lo; i < hi; ++i) {
      const Entry<T> e = entry<T>(i, d, S, m, W, K, KS, cg, cr, Tm, BW, glast, wlast, gL, rL, dL, dlast);
      solve_chunk<T>(e, d, ks.data(), km.data(), u.data(), x.data());
      T* sn = S_new.data_ptr<T>() + i * Dk * Dv;
      const int64_t size = int64_t(Dk) * Dv;
      if (d.mom) {
        T* mn = m_new.data_ptr<T>() + i * Dk * Dv;
#pragma omp simd
        for (int64_t j = 0; j < size; ++j) {
          sn[j] = e.gL * e.S[j] + e.rL * e.m[j];
          mn[j] = e.dL * e.m[j];
        }
        for (int t = 0; t < n; ++t) {  // Y = dlast ⊙ W, in the buffer of KS (no longer needed)
          const T g = e.dlast[t];
#pragma omp simd
          for (int j = 0; j < Dv; ++j) ks[t * Dv + j] = g * e.W[t * Dv + j];
        }
        mm<T>(true, false, Dk, Dv, n, T(1), e.K, Dk, ks.data(), Dv, T(1), mn, Dv);
      } else {
#pragma omp simd
        for (int64_t j = 0; j < size; ++j) sn[j] = e.gL * e.S[j];
      }
      mm<T>(true, false, Dk, Dv, n, T(1), e.K, Dk, x.data(), Dv, T(1), sn, Dv);
    }
  });
}

std::vector<torch::Tensor> forward(CHUNK_ARGS) {
  const Dims d = dims(S, m, W, KS, cg);
  auto S_new = torch::empty_like(S);
  auto m_new = d.mom ? torch::empty_like(m) : torch::empty({0}, S.options());
  AT_DISPATCH_FLOATING_TYPES(S.scalar_type(), "chunk_step_forward",
                             [&] { forward_impl<scalar_t>(S, m, W, K, KS, cg, cr, Tm, BW, glast, wlast, gL, rL,
                                                          dL, dlast, d, S_new, m_new); });
  return {S_new, m_new};
}

template <typename T>
void backward_impl(CHUNK_ARGS, const torch::Tensor& gSn, const torch::Tensor& gmn, const Dims& d,
                 std::vector<torch::Tensor>& g) {
  const int64_t N = S.size(0);
  torch::Tensor &gS = g[0], &gm = g[1], &gW = g[2], &gK = g[3], &gKS = g[4], &gcg = g[5], &gcr = g[6], &gT = g[7],
              &gBW = g[8], &gglast = g[9], &gwlast = g[10], &ggL = g[11], &grL = g[12], &gdL = g[13],
              &gdlast = g[14];
  const bool wl_given = wlast.numel() > 0;
  const int n = d.n, Dk = d.Dk, Dv = d.Dv;
  at::parallel_for(0, N, 1, [&](int64_t lo, int64_t hi) {
    std::vector<T> ks(n * Dv), km(n * Dv), u(n * Dv), x(n * Dv), gx(n * Dv), gy(n * Dv), gr(n * Dv),
        gks(n * Dv);
    for (int64_t i = lo; i < hi; ++i) {
      const Entry<T> e = entry<T>(i, d, S, m, W, K, KS, cg, cr, Tm, BW, glast, wlast, gL, rL, dL, dlast);
      solve_chunk<T>(e, d, ks.data(), km.data(), u.data(), x.data());
      const int64_t size = int64_t(Dk) * Dv;
      const T* gs_n = gSn.data_ptr<T>() + i * size;
      T* gs = gS.data_ptr<T>() + i * size;
      T* gw = gW.data_ptr<T>() + i * n * Dv;
      T* gk = gK.data_ptr<T>() + i * n * Dk;
      // S' = gL S + rL m + Kᵀ X ;  m' = dL m + Kᵀ Y
      mm<T>(false, false, n, Dv, Dk, T(1), e.K, Dk, gs_n, Dv, T(0), gx.data(), Dv);  // ∂X = K ∂S'
      mm<T>(false, true, n, Dk, Dv, T(1), x.data(), Dv, gs_n, Dv, T(0), gk, Dk);     // ∂K = X ∂S'ᵀ
      T dot_s = 0, dot_rm = 0, dot_dm = 0;
      if (d.mom) {
        const T* gm_n = gmn.data_ptr<T>() + i * size;
        T* gmi = gm.data_ptr<T>() + i * size;
#pragma omp simd reduction(+ : dot_s, dot_rm, dot_dm)
        for (int64_t j = 0; j < size; ++j) {
          dot_s += gs_n[j] * e.S[j];
          dot_rm += gs_n[j] * e.m[j];
          dot_dm += gm_n[j] * e.m[j];
          gs[j] = e.gL * gs_n[j];
          gmi[j] = e.rL * gs_n[j] + e.dL * gm_n[j];
        }
        grL.data_ptr<T>()[i] = dot_rm;
        gdL.data_ptr<T>()[i] = dot_dm;
        mm<T>(false, false, n, Dv, Dk, T(1), e.K, Dk, gm_n, Dv, T(0), gy.data(), Dv);  // ∂Y = K ∂m'
        for (int t = 0; t < n; ++t) {  // Y = dlast ⊙ W; ∂K += Y ∂m'ᵀ (Y formed in gks)
          const T g = e.dlast[t];
          T acc = 0;
#pragma omp simd reduction(+ : acc)
          for (int j = 0; j < Dv; ++j) {
            gks[t * Dv + j] = g * e.W[t * Dv + j];
            acc += gy[t * Dv + j] * e.W[t * Dv + j];
          }
          gdlast.data_ptr<T>()[i * n + t] = acc;
        }
        mm<T>(false, true, n, Dk, Dv, T(1), gks.data(), Dv, gm_n, Dv, T(1), gk, Dk);
      } else {
#pragma omp simd reduction(+ : dot_s)
        for (int64_t j = 0; j < size; ++j) {
          dot_s += gs_n[j] * e.S[j];
          gs[j] = e.gL * gs_n[j];
        }
      }
      ggL.data_ptr<T>()[i] = dot_s;
      // X = wlast ⊙ W − glast ⊙ U
      for (int t = 0; t < n; ++t) {
        const T g = e.glast[t], gwl = e.wlast[t], gdl = d.mom ? e.dlast[t] : T(0);
        const T *gxt = gx.data() + t * Dv, *wt = e.W + t * Dv, *gyt = gy.data() + t * Dv, *ut = u.data() + t * Dv;
        T* gwt = gw + t * Dv;
        T* grt = gr.data() + t * Dv;
        T acc_w = 0, acc_u = 0;
#pragma omp simd reduction(+ : acc_w)
        for (int j = 0; j < Dv; ++j) {
          acc_w += gxt[j] * wt[j];
          gwt[j] = gwl * gxt[j] + gdl * gyt[j];
        }
        if (d.pre) {
#pragma omp simd reduction(+ : acc_u)
          for (int j = 0; j < Dv; ++j) {
            acc_u -= gxt[j] * ut[j];
            grt[j] = -g * gxt[j];  // ∂U
          }
        }
        if (wl_given) {
          gglast.data_ptr<T>()[i * n + t] = acc_u;
          gwlast.data_ptr<T>()[i * n + t] = acc_w;
        } else {
          gglast.data_ptr<T>()[i * n + t] = acc_u + acc_w;
        }
      }
      if (!d.pre) continue;
      // ∂rhs = L⁻ᵀ ∂U: backward substitution with the unit upper Lᵀ
      for (int t = n - 1; t >= 0; --t) {
        T* grt = gr.data() + t * Dv;
        for (int s = t + 1; s < n; ++s) {
          const T l = e.Tm[s * n + t];
          const T* grs = gr.data() + s * Dv;
#pragma omp simd
          for (int j = 0; j < Dv; ++j) grt[j] -= l * grs[j];
        }
      }
      // ∂L = −∂rhs Uᵀ on the strict lower part
      T* gt = gT.data_ptr<T>() + i * n * n;
      mm<T>(false, true, n, n, Dv, T(-1), gr.data(), Dv, u.data(), Dv, T(0), gt, n);
      for (int t = 0; t < n; ++t)
        for (int s = t; s < n; ++s) gt[t * n + s] = 0;
      // rhs = cg ⊙ KS + BW W + cr ⊙ Km
      mm<T>(false, true, n, n, Dv, T(1), gr.data(), Dv, e.W, Dv, T(0), gBW.data_ptr<T>() + i * n * n, n);
      mm<T>(true, false, n, Dv, n, T(1), e.BW, n, gr.data(), Dv, T(1), gw, Dv);
      const T* KSp = d.ks_given ? e.KS : ks.data();
      T* gksp = d.ks_given ? gKS.data_ptr<T>() + i * n * Dv : gks.data();
      for (int t = 0; t < n; ++t) {
        const T c = e.cg[t];
        const T *grt = gr.data() + t * Dv, *kst = KSp + t * Dv, *kmt = km.data() + t * Dv;
        T* gkst = gksp + t * Dv;
        T acc = 0, accm = 0;
#pragma omp simd reduction(+ : acc)
        for (int j = 0; j < Dv; ++j) {
          acc += grt[j] * kst[j];
          gkst[j] = c * grt[j];
        }
        if (d.mom) {
#pragma omp simd reduction(+ : accm)
          for (int j = 0; j < Dv; ++j) accm += grt[j] * kmt[j];
        }
        gcg.data_ptr<T>()[i * n + t] = acc;
        if (d.mom) gcr.data_ptr<T>()[i * n + t] = accm;
      }
      if (!d.ks_given) {  // KS = K S was formed here
        mm<T>(true, false, Dk, Dv, n, T(1), e.K, Dk, gksp, Dv, T(1), gs, Dv);
        mm<T>(false, true, n, Dk, Dv, T(1), gksp, Dv, e.S, Dv, T(1), gk, Dk);
      }
      if (d.mom) {  // Km = K m; ∂Km = cr ⊙ ∂rhs (in the buffer of ∂Y, used above)
        T* gmi = gm.data_ptr<T>() + i * size;
        for (int t = 0; t < n; ++t) {
          const T r = e.cr[t];
#pragma omp simd
          for (int j = 0; j < Dv; ++j) gy[t * Dv + j] = r * gr[t * Dv + j];
        }
        mm<T>(true, false, Dk, Dv, n, T(1), e.K, Dk, gy.data(), Dv, T(1), gmi, Dv);
        mm<T>(false, true, n, Dk, Dv, T(1), gy.data(), Dv, e.m, Dv, T(1), gk, Dk);
      }
    }
  });
}

// Gradients of every input, in the order of forward's arguments (empty where the input was absent).
std::vector<torch::Tensor> backward(CHUNK_ARGS, const torch::Tensor& gSn, const torch::Tensor& gmn) {
  const Dims d = dims(S, m, W, KS, cg);
  auto empty = torch::empty({0}, S.options());
  auto gS = torch::empty_like(S), gW = torch::empty_like(W), gK = torch::empty_like(K);
  auto gglast = torch::empty_like(glast), ggL = torch::empty_like(gL);
  const bool wl_given = wlast.numel() > 0;
  auto gwlast = wl_given ? torch::empty_like(wlast) : empty;
  auto gm = d.mom ? torch::empty_like(m) : empty, gdlast = d.mom ? torch::empty_like(dlast) : empty;
  auto grL = d.mom ? torch::empty_like(rL) : empty, gdL = d.mom ? torch::empty_like(dL) : empty;
  auto gKS = d.ks_given ? torch::empty_like(KS) : empty;
  auto gcg = d.pre ? torch::empty_like(cg) : empty, gT = d.pre ? torch::empty_like(Tm) : empty;
  auto gBW = d.pre ? torch::empty_like(BW) : empty, gcr = d.pre && d.mom ? torch::empty_like(cr) : empty;
  std::vector<torch::Tensor> g{gS, gm, gW, gK, gKS, gcg, gcr, gT, gBW, gglast, gwlast, ggL, grL, gdL, gdlast};
  AT_DISPATCH_FLOATING_TYPES(S.scalar_type(), "chunk_step_backward", [&] {
    backward_impl<scalar_t>(S, m, W, K, KS, cg, cr, Tm, BW, glast, wlast, gL, rL, dL, dlast, gSn, gmn, d, g);
  });
  return g;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, mod) {
  mod.def("forward", &forward, "fused chunk step, forward");
  mod.def("backward", &backward, "fused chunk step, backward");
}
