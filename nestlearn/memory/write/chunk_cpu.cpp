// The chunk step of chunk.py (one fast-weight matrix over one chunk, its gate products included)
// fused per batch entry, forward and backward, for CPU tensors. Loaded by fused.py; chunk.py's
// ``ChunkGates`` / ``ChunkCoefficients`` / ``chunk_step`` are its reference, and the tests compare the
// two paths (values and the gradients of every input, float64).
//
// Per batch entry (row convention, row-major; token t = 1..n, index 0 = the chunk start):
//   Γ[t,s] = Π_{j=s+1..t} a_j,  Δ[t,s] = Π_{j=s+1..t} β_j,  GM[t,i] = Σ_s Γ[t,s] Δ[s,i],  ρ[t] = Σ_{s≥1} Γ[t,s] Δ[s,0]
//   KS = K S (or given), Km = K m
//   rhs = cg ⊙ KS + BW W + cr ⊙ Km      cg_t = b_t Γ[t−1,0], cr_t = b_t ρ[t−1], BW[t,i] = b_t (k_t·k_i) GM[t−1,i]
//   U = L⁻¹ rhs, L = I + T               T[t,i] = b_t (k_t·k_i) Γ[t−1,i]  (strictly lower: the UT transform)
//   X = wlast ⊙ W − glast ⊙ U            wlast_i = GM[n,i], glast_i = Γ[n,i]
//   S' = Γ[n,0] S + ρ[n] m + Kᵀ X,  m' = Δ[n,0] m + Kᵀ (dlast ⊙ W),  dlast_i = Δ[n,i]
//   with queries Q (per-token reads, the dual form), Y[t] = q_t S_t:
//   Y = γ ⊙ Q S + ρ ⊙ Q m + (Q Kᵀ ∘ GM) W − (Q Kᵀ ∘ Γ) U   (t, i = 1..n, i ≤ t; γ_t = Γ[t,0], ρ_t = ρ[t])
// Without momentum GM = Γ and ρ = 0; without a preconditioner (b absent) U = 0.
// The backward recomputes every n × D panel from the inputs (nothing of that size is saved) and
// keeps each entry's state, momentum and their gradients in cache while it forms every product that
// touches them. Products go to the BLAS that PyTorch links (sgemm_/dgemm_), one entry per call.

#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <algorithm>
#include <vector>

extern "C" {
void sgemm_(const char*, const char*, const int*, const int*, const int*, const float*, const float*, const int*,
            const float*, const int*, const float*, float*, const int*);
void dgemm_(const char*, const char*, const int*, const int*, const int*, const double*, const double*,
            const int*, const double*, const int*, const double*, double*, const int*);
void strsm_(const char*, const char*, const char*, const char*, const int*, const int*, const float*, const float*,
            const int*, float*, const int*);
void dtrsm_(const char*, const char*, const char*, const char*, const int*, const int*, const double*,
            const double*, const int*, double*, const int*);
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

inline void trsm(const char* tr, int m, int n, const float* a, int lda, float* b, int ldb) {
  const float one = 1;
  strsm_("R", "U", tr, "U", &m, &n, &one, a, &lda, b, &ldb);
}
inline void trsm(const char* tr, int m, int n, const double* a, int lda, double* b, int ldb) {
  const double one = 1;
  dtrsm_("R", "U", tr, "U", &m, &n, &one, a, &lda, b, &ldb);
}

// Row-major X[n×Dv] ← L⁻¹ X (transpose = false) or L⁻ᵀ X (true), L = I + the strict lower part of the
// row-major n × n matrix Lo (its diagonal and upper part are not read). Column-major, Lo is Loᵀ (upper)
// and X is Xᵀ, so L⁻¹ X is Xᵀ L⁻ᵀ: a right-side solve with Loᵀ, and L⁻ᵀ X one with (Loᵀ)ᵀ.
template <typename T>
inline void unit_lower_solve(bool transpose, int n, int Dv, const T* Lo, T* X) {
  trsm(transpose ? "T" : "N", Dv, n, Lo, n, X, Dv);
}

// Row-major C[m×n] = alpha · op(A) op(B) + beta · C, op(A) m×k, op(B) k×n; ta/tb: is A/B transposed.
// A column-major BLAS sees a row-major matrix as its transpose, so it computes Cᵀ = op(B)ᵀ op(A)ᵀ.
template <typename T>
inline void mm(bool ta, bool tb, int m, int n, int k, T alpha, const T* A, int lda, const T* B, int ldb, T beta,
               T* C, int ldc) {
  blas(tb ? "T" : "N", ta ? "T" : "N", n, m, k, alpha, B, ldb, A, lda, beta, C, ldc);
}

struct Dims {
  int n, Dk, Dv;
  bool mom, pre, ks_given, read;
};

// The gate algebra of one entry: products of a, β and the preconditioner's coefficients.
template <typename T>
struct Gates {
  int n = 0, N1 = 0;
  std::vector<T> G, D, GM, rho, KK, cg, cr, Tm, BW, glast, wlast, dlast;
  T gL = 0, rL = 0, dL = 0;

  explicit Gates(int n_) : n(n_), N1(n_ + 1) {
    G.assign(N1 * N1, 0);
    D.assign(N1 * N1, 0);
    GM.assign(N1 * N1, 0);
    rho.assign(N1, 0);
    KK.assign(n * n, 0);
    cg.assign(n, 0);
    cr.assign(n, 0);
    Tm.assign(n * n, 0);
    BW.assign(n * n, 0);
    glast.assign(n, 0);
    wlast.assign(n, 0);
    dlast.assign(n, 0);
  }

  static void products(const T* a, int n, T* P) {  // P[t,s] = Π_{j=s+1..t} a_j, a_j at a[j−1]
    const int N1 = n + 1;
    for (int t = 0; t <= n; ++t) {
      P[t * N1 + t] = 1;
      for (int s = t - 1; s >= 0; --s) P[t * N1 + s] = P[t * N1 + s + 1] * a[s];
    }
  }

  void build(const T* a, const T* beta, const T* b, const T* K, int Dk, const Dims& d) {
    products(a, n, G.data());
    gL = G[n * N1];
    for (int i = 0; i < n; ++i) glast[i] = G[n * N1 + i + 1];
    if (d.mom) {
      products(beta, n, D.data());
      // GM[:, 1:] = G[:, 1:] D[1:, 1:]  (structural zeros make it Σ_{s=i..t})
      mm<T>(false, false, N1, n, n, T(1), G.data() + 1, N1, D.data() + N1 + 1, N1, T(0), GM.data() + 1, N1);
      for (int t = 0; t <= n; ++t) {
        T r = 0;
        for (int s = 1; s <= t; ++s) r += G[t * N1 + s] * D[s * N1];
        rho[t] = r;
      }
      for (int i = 0; i < n; ++i) {
        wlast[i] = GM[n * N1 + i + 1];
        dlast[i] = D[n * N1 + i + 1];
      }
      rL = rho[n];
      dL = D[n * N1];
    } else {
      wlast = glast;
    }
    if (!d.pre) return;
    const std::vector<T>& W = d.mom ? GM : G;
    mm<T>(false, true, n, n, Dk, T(1), K, Dk, K, Dk, T(0), KK.data(), n);  // K Kᵀ
    for (int t = 0; t < n; ++t) {
      cg[t] = b[t] * G[t * N1];
      cr[t] = d.mom ? b[t] * rho[t] : T(0);
      for (int i = 0; i < t; ++i) {
        const T kk = KK[t * n + i];
        Tm[t * n + i] = b[t] * kk * G[t * N1 + i + 1];
        BW[t * n + i] = b[t] * kk * W[t * N1 + i + 1];
      }
    }
  }

  // Gradients of the derived quantities → a, β, b, and K (accumulated into gK).
  void backward(const T* a, const T* beta, const T* b, const T* K, int Dk, const Dims& d, const T* gcg,
                const T* gcr, const T* gT, const T* gBW, const T* gglast, const T* gwlast, T ggL, T grL, T gdL,
                const T* gdlast, T* ga, T* gbeta, T* gb, T* gK, std::vector<T>& gG, std::vector<T>& gD,
                std::vector<T>& gGM, std::vector<T>& grho, std::vector<T>& gKK) const {
    std::fill(gKK.begin(), gKK.end(), T(0));  // gG, gD, gGM, grho arrive holding the reads' part
    gG[n * N1] += ggL;
    for (int i = 0; i < n; ++i) {
      gG[n * N1 + i + 1] += gglast[i];
      if (d.mom) {
        gGM[n * N1 + i + 1] += gwlast[i];
        gD[n * N1 + i + 1] += gdlast[i];
      } else {
        gG[n * N1 + i + 1] += gwlast[i];  // wlast is glast
      }
    }
    if (d.mom) {
      grho[n] += grL;
      gD[n * N1] += gdL;
    }
    if (d.pre) {
      for (int t = 0; t < n; ++t) {
        T gbt = gcg[t] * G[t * N1];
        gG[t * N1] += gcg[t] * b[t];
        if (d.mom) {
          gbt += gcr[t] * rho[t];
          grho[t] += gcr[t] * b[t];
        }
        for (int i = 0; i < t; ++i) {
          const T kk = KK[t * n + i], gs = G[t * N1 + i + 1], ws = d.mom ? GM[t * N1 + i + 1] : gs;
          const T gt = gT[t * n + i], gw = gBW[t * n + i];
          gbt += (gt * gs + gw * ws) * kk;
          gG[t * N1 + i + 1] += gt * b[t] * kk;
          (d.mom ? gGM : gG)[t * N1 + i + 1] += gw * b[t] * kk;
          gKK[t * n + i] = b[t] * (gt * gs + gw * ws);  // ∂(k_t·k_i), strictly lower
        }
        gb[t] = gbt;
      }
      // KK = K Kᵀ on the strict lower part: ∂K += ∂KK K + ∂KKᵀ K
      mm<T>(false, false, n, Dk, n, T(1), gKK.data(), n, K, Dk, T(1), gK, Dk);
      mm<T>(true, false, n, Dk, n, T(1), gKK.data(), n, K, Dk, T(1), gK, Dk);
    }
    if (d.mom) {
      // GM[:, 1:] = G[:, 1:] D[1:, 1:]: ∂G[:, 1:] += ∂GM D[1:, 1:]ᵀ, ∂D[1:, 1:] += G[:, 1:]ᵀ ∂GM (entries off the
      // triangles are structural zeros and are never read back)
      mm<T>(false, true, N1, n, n, T(1), gGM.data() + 1, N1, D.data() + N1 + 1, N1, T(1), gG.data() + 1, N1);
      mm<T>(true, false, n, n, N1, T(1), G.data() + 1, N1, gGM.data() + 1, N1, T(1), gD.data() + N1 + 1, N1);
      for (int t = 0; t <= n; ++t) {
        for (int s = 1; s <= t; ++s) {
          gG[t * N1 + s] += grho[t] * D[s * N1];
          gD[s * N1] += grho[t] * G[t * N1 + s];
        }
      }
    }
    product_grad(G, gG, ga);
    if (d.mom) product_grad(D, gD, gbeta);
  }

  // P[t,s] = Π_{j=s+1..t} x_j: ∂/∂x_j = Σ_{s<j≤t} gP[t,s] P[j−1,s] P[t,j] (no division: exact at x_j = 0)
  void product_grad(const std::vector<T>& P, const std::vector<T>& gP, T* gx) const {
    for (int j = 1; j <= n; ++j) {
      T acc = 0;
      const T* pj = P.data() + (j - 1) * N1;
      for (int t = j; t <= n; ++t) {
        const T* gpt = gP.data() + t * N1;
        T row = 0;
#pragma omp simd reduction(+ : row)
        for (int s = 0; s < j; ++s) row += gpt[s] * pj[s];
        acc += row * P[t * N1 + j];
      }
      gx[j - 1] = acc;
    }
  }
};

template <typename T>
struct Entry {  // pointers to one batch entry of every input
  const T *S, *m, *W, *K, *KS, *a, *beta, *b, *Q;
};

template <typename T>
Entry<T> entry(int64_t i, const Dims& d, const torch::Tensor& S, const torch::Tensor& m, const torch::Tensor& W,
               const torch::Tensor& K, const torch::Tensor& KS, const torch::Tensor& a, const torch::Tensor& beta,
               const torch::Tensor& b, const torch::Tensor& Q) {
  const int64_t n = d.n, Dk = d.Dk, Dv = d.Dv;
  Entry<T> e{};
  e.S = S.data_ptr<T>() + i * Dk * Dv;
  e.W = W.data_ptr<T>() + i * n * Dv;
  e.K = K.data_ptr<T>() + i * n * Dk;
  e.a = a.data_ptr<T>() + i * n;
  if (d.mom) {
    e.m = m.data_ptr<T>() + i * Dk * Dv;
    e.beta = beta.data_ptr<T>() + i * n;
  }
  if (d.pre) {
    e.b = b.data_ptr<T>() + i * n;
    if (d.ks_given) e.KS = KS.data_ptr<T>() + i * n * Dv;
  }
  if (d.read) e.Q = Q.data_ptr<T>() + i * n * Dk;
  return e;
}

// U (in u) and X for one entry; KS and Km into ks / km when formed here
template <typename T>
void solve_chunk(const Entry<T>& e, const Gates<T>& g, const Dims& d, T* ks, T* km, T* u, T* x) {
  const int n = d.n, Dk = d.Dk, Dv = d.Dv;
  if (d.pre) {
    const T* KS = e.KS;
    if (!d.ks_given) {
      mm<T>(false, false, n, Dv, Dk, T(1), e.K, Dk, e.S, Dv, T(0), ks, Dv);
      KS = ks;
    }
    mm<T>(false, false, n, Dv, n, T(1), g.BW.data(), n, e.W, Dv, T(0), u, Dv);  // BW W
    if (d.mom) mm<T>(false, false, n, Dv, Dk, T(1), e.K, Dk, e.m, Dv, T(0), km, Dv);
    for (int t = 0; t < n; ++t) {
      T* ut = u + t * Dv;
      const T c = g.cg[t], r = g.cr[t];
      const T *kst = KS + t * Dv, *kmt = km + t * Dv;
      if (d.mom) {
#pragma omp simd
        for (int j = 0; j < Dv; ++j) ut[j] += c * kst[j] + r * kmt[j];
      } else {
#pragma omp simd
        for (int j = 0; j < Dv; ++j) ut[j] += c * kst[j];
      }
    }
    unit_lower_solve<T>(false, n, Dv, g.Tm.data(), u);
  }
  for (int t = 0; t < n; ++t) {
    const T gl = g.glast[t], wl = g.wlast[t];
    const T *wt = e.W + t * Dv, *ut = u + t * Dv;
    T* xt = x + t * Dv;
    if (d.pre) {
#pragma omp simd
      for (int j = 0; j < Dv; ++j) xt[j] = wl * wt[j] - gl * ut[j];
    } else {
#pragma omp simd
      for (int j = 0; j < Dv; ++j) xt[j] = wl * wt[j];
    }
  }
}

Dims dims(const torch::Tensor& S, const torch::Tensor& m, const torch::Tensor& W, const torch::Tensor& KS,
          const torch::Tensor& b, const torch::Tensor& Q) {
  return Dims{static_cast<int>(W.size(1)), static_cast<int>(S.size(1)), static_cast<int>(S.size(2)),
              m.numel() > 0, b.numel() > 0, KS.numel() > 0, Q.numel() > 0};
}

// The per-token reads' masks: PW = Q Kᵀ ∘ GM (Γ without momentum), PU = Q Kᵀ ∘ Γ, both over i ≤ t
// (token t, i = 1..n at index t−1, i−1). qk holds Q Kᵀ.
template <typename T>
void read_masks(const Gates<T>& g, const Dims& d, const T* qk, T* pw, T* pu) {
  const int n = d.n, N1 = n + 1;
  const std::vector<T>& Wm = d.mom ? g.GM : g.G;
  for (int t = 0; t < n; ++t) {
    for (int i = 0; i < n; ++i) {
      const bool in = i <= t;
      pw[t * n + i] = in ? qk[t * n + i] * Wm[(t + 1) * N1 + i + 1] : T(0);
      pu[t * n + i] = in ? qk[t * n + i] * g.G[(t + 1) * N1 + i + 1] : T(0);
    }
  }
}

// Y = γ ⊙ Q S + ρ ⊙ Q m + PW W − PU U for one entry, as one product [PW | −PU | γ ⊙ Q | ρ ⊙ Q] [W; U; S; m]
// (the parts present; without momentum PW = PU and the first block is PW (W − U)). One product of inner
// size 2n + 2Dk keeps the cores busier than four of inner size n or Dk (lhs, rhs: scratch; qk: Q Kᵀ).
template <typename T>
void read_tokens(const Entry<T>& e, const Gates<T>& g, const Dims& d, const T* u, T* qk, T* lhs, T* rhs, T* y) {
  const int n = d.n, Dk = d.Dk, Dv = d.Dv, N1 = n + 1;
  const bool merged = d.pre && !d.mom, two = d.pre && !merged;
  const int K = n + (two ? n : 0) + Dk + (d.mom ? Dk : 0);
  mm<T>(false, true, n, n, Dk, T(1), e.Q, Dk, e.K, Dk, T(0), qk, n);  // Q Kᵀ
  const std::vector<T>& Wm = d.mom ? g.GM : g.G;
  for (int t = 0; t < n; ++t) {
    T* row = lhs + t * K;
    for (int i = 0; i < n; ++i) row[i] = i <= t ? qk[t * n + i] * Wm[(t + 1) * N1 + i + 1] : T(0);
    int c = n;
    if (two) {
      for (int i = 0; i < n; ++i) row[c + i] = i <= t ? -qk[t * n + i] * g.G[(t + 1) * N1 + i + 1] : T(0);
      c += n;
    }
    const T gam = g.G[(t + 1) * N1], r = d.mom ? g.rho[t + 1] : T(0);
    for (int j = 0; j < Dk; ++j) row[c + j] = gam * e.Q[t * Dk + j];
    if (d.mom)
      for (int j = 0; j < Dk; ++j) row[c + Dk + j] = r * e.Q[t * Dk + j];
  }
  T* r = rhs;
  if (merged) {
    for (int j = 0; j < n * Dv; ++j) r[j] = e.W[j] - u[j];
  } else {
    std::copy(e.W, e.W + n * Dv, r);
  }
  r += n * Dv;
  if (two) {
    std::copy(u, u + n * Dv, r);
    r += n * Dv;
  }
  std::copy(e.S, e.S + Dk * Dv, r);
  r += Dk * Dv;
  if (d.mom) std::copy(e.m, e.m + Dk * Dv, r);
  mm<T>(false, false, n, Dv, K, T(1), lhs, K, rhs, Dv, T(0), y, Dv);
}

}  // namespace

#define CHUNK_ARGS                                                                                              \
  const torch::Tensor &S, const torch::Tensor &m, const torch::Tensor &W, const torch::Tensor &K,             \
      const torch::Tensor &KS, const torch::Tensor &a, const torch::Tensor &beta, const torch::Tensor &b,     \
      const torch::Tensor &Q

// One entry's pointers, gate algebra, U and X (in ks, km, u, x): the start of both directions.
template <typename T>
Entry<T> prepare(int64_t i, const Dims& d, CHUNK_ARGS, Gates<T>& g, T* ks, T* km, T* u, T* x) {
  const Entry<T> e = entry<T>(i, d, S, m, W, K, KS, a, beta, b, Q);
  g.build(e.a, e.beta, e.b, e.K, d.Dk, d);
  solve_chunk<T>(e, g, d, ks, km, u, x);
  return e;
}

template <typename T>
void forward_impl(CHUNK_ARGS, const Dims& d, torch::Tensor& S_new, torch::Tensor& m_new, torch::Tensor& Y) {
  const int64_t N = S.size(0);
  const int n = d.n, Dk = d.Dk, Dv = d.Dv;
  at::parallel_for(0, N, 1, [&](int64_t lo, int64_t hi) {
    std::vector<T> ks(n * Dv), km(n * Dv), u(n * Dv), x(n * Dv);
    const int width = 2 * n + 2 * Dk;  // the widest read product (see read_tokens)
    std::vector<T> qk(d.read ? n * n : 0), lhs(d.read ? n * width : 0), rhs(d.read ? width * Dv : 0);
    Gates<T> g(n);
    for (int64_t i = lo; i < hi; ++i) {
      const Entry<T> e = prepare<T>(i, d, S, m, W, K, KS, a, beta, b, Q, g, ks.data(), km.data(), u.data(), x.data());
      const int64_t size = int64_t(Dk) * Dv;
      if (d.read)
        read_tokens<T>(e, g, d, u.data(), qk.data(), lhs.data(), rhs.data(), Y.data_ptr<T>() + i * n * Dv);
      T* sn = S_new.data_ptr<T>() + i * size;
      if (d.mom) {
        T* mn = m_new.data_ptr<T>() + i * size;
        const T gL = g.gL, rL = g.rL, dL = g.dL;
#pragma omp simd
        for (int64_t j = 0; j < size; ++j) {
          sn[j] = gL * e.S[j] + rL * e.m[j];
          mn[j] = dL * e.m[j];
        }
        for (int t = 0; t < n; ++t) {  // Y = dlast ⊙ W, in the buffer of KS (no longer needed)
          const T dl = g.dlast[t];
#pragma omp simd
          for (int j = 0; j < Dv; ++j) ks[t * Dv + j] = dl * e.W[t * Dv + j];
        }
        mm<T>(true, false, Dk, Dv, n, T(1), e.K, Dk, ks.data(), Dv, T(1), mn, Dv);
      } else {
        const T gL = g.gL;
#pragma omp simd
        for (int64_t j = 0; j < size; ++j) sn[j] = gL * e.S[j];
      }
      mm<T>(true, false, Dk, Dv, n, T(1), e.K, Dk, x.data(), Dv, T(1), sn, Dv);
    }
  });
}

std::vector<torch::Tensor> forward(CHUNK_ARGS) {
  const Dims d = dims(S, m, W, KS, b, Q);
  auto S_new = torch::empty_like(S);
  auto m_new = d.mom ? torch::empty_like(m) : torch::empty({0}, S.options());
  auto Y = d.read ? torch::empty_like(W) : torch::empty({0}, S.options());
  AT_DISPATCH_FLOATING_TYPES(S.scalar_type(), "chunk_step_forward", [&] {
    forward_impl<scalar_t>(S, m, W, K, KS, a, beta, b, Q, d, S_new, m_new, Y);
  });
  return {S_new, m_new, Y};
}

template <typename T>
void backward_impl(CHUNK_ARGS, const torch::Tensor& gSn, const torch::Tensor& gmn, const torch::Tensor& gYn,
                   const Dims& d, std::vector<torch::Tensor>& out) {
  const int64_t N = S.size(0);
  const int n = d.n, Dk = d.Dk, Dv = d.Dv, N1 = n + 1;
  torch::Tensor &gS = out[0], &gm = out[1], &gW = out[2], &gK = out[3], &gKS = out[4], &ga = out[5],
                &gbeta = out[6], &gb = out[7], &gQ = out[8];
  at::parallel_for(0, N, 1, [&](int64_t lo, int64_t hi) {
    std::vector<T> ks(n * Dv), km(n * Dv), u(n * Dv), x(n * Dv), gx(n * Dv), gy(n * Dv), gr(n * Dv), gks(n * Dv);
    std::vector<T> gcg(n), gcr(n), gT(n * n), gBW(n * n), gglast(n), gwlast(n), gdlast(n);
    std::vector<T> gG(N1 * N1), gD(N1 * N1), gGM(N1 * N1), grho(N1), gKK(n * n);
    std::vector<T> zeros_b(d.pre ? 0 : n);
    const int rn = d.read ? n : 0;
    std::vector<T> qs(rn * Dv), qk(rn * n), pw(rn * n), pu(rn * n), gp(rn * n), gqk(rn * n), gq(rn * Dv);
    Gates<T> g(n);
    for (int64_t i = lo; i < hi; ++i) {
      std::fill(gG.begin(), gG.end(), T(0));
      std::fill(gD.begin(), gD.end(), T(0));
      std::fill(gGM.begin(), gGM.end(), T(0));
      std::fill(grho.begin(), grho.end(), T(0));
      const Entry<T> e = prepare<T>(i, d, S, m, W, K, KS, a, beta, b, Q, g, ks.data(), km.data(), u.data(), x.data());
      const int64_t size = int64_t(Dk) * Dv;
      const T* gs_n = gSn.data_ptr<T>() + i * size;
      T* gs = gS.data_ptr<T>() + i * size;
      T* gw = gW.data_ptr<T>() + i * n * Dv;
      T* gk = gK.data_ptr<T>() + i * n * Dk;
      // S' = gL S + rL m + Kᵀ X ;  m' = dL m + Kᵀ Y
      mm<T>(false, false, n, Dv, Dk, T(1), e.K, Dk, gs_n, Dv, T(0), gx.data(), Dv);  // ∂X = K ∂S'
      mm<T>(false, true, n, Dk, Dv, T(1), x.data(), Dv, gs_n, Dv, T(0), gk, Dk);     // ∂K = X ∂S'ᵀ
      T ggL = 0, grL = 0, gdL = 0;
      const T gL = g.gL, rL = g.rL, dL = g.dL;
      if (d.mom) {
        const T* gm_n = gmn.data_ptr<T>() + i * size;
        T* gmi = gm.data_ptr<T>() + i * size;
#pragma omp simd reduction(+ : ggL, grL, gdL)
        for (int64_t j = 0; j < size; ++j) {
          ggL += gs_n[j] * e.S[j];
          grL += gs_n[j] * e.m[j];
          gdL += gm_n[j] * e.m[j];
          gs[j] = gL * gs_n[j];
          gmi[j] = rL * gs_n[j] + dL * gm_n[j];
        }
        mm<T>(false, false, n, Dv, Dk, T(1), e.K, Dk, gm_n, Dv, T(0), gy.data(), Dv);  // ∂Y = K ∂m'
        for (int t = 0; t < n; ++t) {  // Y = dlast ⊙ W (formed in gks); ∂K += Y ∂m'ᵀ
          const T dl = g.dlast[t];
          const T *wt = e.W + t * Dv, *gyt = gy.data() + t * Dv;
          T* yt = gks.data() + t * Dv;
          T acc = 0;
#pragma omp simd reduction(+ : acc)
          for (int j = 0; j < Dv; ++j) {
            yt[j] = dl * wt[j];
            acc += gyt[j] * wt[j];
          }
          gdlast[t] = acc;
        }
        mm<T>(false, true, n, Dk, Dv, T(1), gks.data(), Dv, gm_n, Dv, T(1), gk, Dk);
      } else {
#pragma omp simd reduction(+ : ggL)
        for (int64_t j = 0; j < size; ++j) {
          ggL += gs_n[j] * e.S[j];
          gs[j] = gL * gs_n[j];
        }
      }
      // X = wlast ⊙ W − glast ⊙ U
      for (int t = 0; t < n; ++t) {
        const T gl = g.glast[t], wl = g.wlast[t], dl = d.mom ? g.dlast[t] : T(0);
        const T *gxt = gx.data() + t * Dv, *wt = e.W + t * Dv, *gyt = gy.data() + t * Dv, *ut = u.data() + t * Dv;
        T* gwt = gw + t * Dv;
        T* grt = gr.data() + t * Dv;
        T acc_w = 0, acc_u = 0;
#pragma omp simd reduction(+ : acc_w)
        for (int j = 0; j < Dv; ++j) {
          acc_w += gxt[j] * wt[j];
          gwt[j] = wl * gxt[j] + dl * gyt[j];
        }
        if (d.pre) {
#pragma omp simd reduction(+ : acc_u)
          for (int j = 0; j < Dv; ++j) {
            acc_u -= gxt[j] * ut[j];
            grt[j] = -gl * gxt[j];  // ∂U
          }
        }
        gwlast[t] = acc_w;
        gglast[t] = acc_u;
      }
      if (d.read) {  // Y = γ ⊙ Q S + ρ ⊙ Q m + PW W − PU U: its part of every gradient (∂U before the solve)
        const T* gy_t = gYn.data_ptr<T>() + i * n * Dv;
        T* gqi = gQ.data_ptr<T>() + i * n * Dk;
        mm<T>(false, true, n, n, Dk, T(1), e.Q, Dk, e.K, Dk, T(0), qk.data(), n);
        read_masks<T>(g, d, qk.data(), pw.data(), pu.data());
        const bool one = d.pre && !d.mom;  // PW = PU: ∂ of PW (W − U) in one pair of products
        if (one) {
          for (int j = 0; j < n * Dv; ++j) gq[j] = e.W[j] - u[j];  // W − U (gq as scratch)
          mm<T>(false, true, n, n, Dv, T(1), gy_t, Dv, gq.data(), Dv, T(0), gp.data(), n);  // ∂PW = ∂Y (W − U)ᵀ
          mm<T>(true, false, n, Dv, n, T(1), pw.data(), n, gy_t, Dv, T(0), gq.data(), Dv);  // PWᵀ ∂Y
          for (int j = 0; j < n * Dv; ++j) {
            gw[j] += gq[j];
            gr[j] -= gq[j];
          }
        } else {
          mm<T>(true, false, n, Dv, n, T(1), pw.data(), n, gy_t, Dv, T(1), gw, Dv);  // ∂W += PWᵀ ∂Y
          mm<T>(false, true, n, n, Dv, T(1), gy_t, Dv, e.W, Dv, T(0), gp.data(), n);  // ∂PW = ∂Y Wᵀ
        }
        std::vector<T>& gWm = d.mom ? gGM : gG;
        const std::vector<T>& Wm = d.mom ? g.GM : g.G;
        for (int t = 0; t < n; ++t) {
          for (int j = 0; j <= t; ++j) {
            const T gpw = gp[t * n + j];
            gWm[(t + 1) * N1 + j + 1] += gpw * qk[t * n + j];
            gqk[t * n + j] = gpw * Wm[(t + 1) * N1 + j + 1];
          }
          for (int j = t + 1; j < n; ++j) gqk[t * n + j] = 0;
        }
        if (d.pre && !one) {
          mm<T>(true, false, n, Dv, n, T(-1), pu.data(), n, gy_t, Dv, T(1), gr.data(), Dv);  // ∂U −= PUᵀ ∂Y
          mm<T>(false, true, n, n, Dv, T(-1), gy_t, Dv, u.data(), Dv, T(0), gp.data(), n);   // ∂PU = −∂Y Uᵀ
          for (int t = 0; t < n; ++t) {
            for (int j = 0; j <= t; ++j) {
              const T gpu = gp[t * n + j];
              gG[(t + 1) * N1 + j + 1] += gpu * qk[t * n + j];
              gqk[t * n + j] += gpu * g.G[(t + 1) * N1 + j + 1];
            }
          }
        }
        // ∂Q = ∂QK K + (γ ⊙ ∂Y) Sᵀ + (ρ ⊙ ∂Y) mᵀ;  ∂K += ∂QKᵀ Q;  ∂S += Qᵀ (γ ⊙ ∂Y);  ∂m += Qᵀ (ρ ⊙ ∂Y)
        mm<T>(false, false, n, Dk, n, T(1), gqk.data(), n, e.K, Dk, T(0), gqi, Dk);
        mm<T>(true, false, n, Dk, n, T(1), gqk.data(), n, e.Q, Dk, T(1), gk, Dk);
        mm<T>(false, false, n, Dv, Dk, T(1), e.Q, Dk, e.S, Dv, T(0), qs.data(), Dv);  // Q S
        for (int t = 0; t < n; ++t) {
          const T c = g.G[(t + 1) * N1];
          T acc = 0;
#pragma omp simd reduction(+ : acc)
          for (int j = 0; j < Dv; ++j) {
            acc += gy_t[t * Dv + j] * qs[t * Dv + j];
            gq[t * Dv + j] = c * gy_t[t * Dv + j];
          }
          gG[(t + 1) * N1] += acc;
        }
        mm<T>(false, true, n, Dk, Dv, T(1), gq.data(), Dv, e.S, Dv, T(1), gqi, Dk);
        mm<T>(true, false, Dk, Dv, n, T(1), e.Q, Dk, gq.data(), Dv, T(1), gs, Dv);
        if (d.mom) {
          T* gmi = gm.data_ptr<T>() + i * size;
          mm<T>(false, false, n, Dv, Dk, T(1), e.Q, Dk, e.m, Dv, T(0), qs.data(), Dv);  // Q m
          for (int t = 0; t < n; ++t) {
            const T r = g.rho[t + 1];
            T acc = 0;
#pragma omp simd reduction(+ : acc)
            for (int j = 0; j < Dv; ++j) {
              acc += gy_t[t * Dv + j] * qs[t * Dv + j];
              gq[t * Dv + j] = r * gy_t[t * Dv + j];
            }
            grho[t + 1] += acc;
          }
          mm<T>(false, true, n, Dk, Dv, T(1), gq.data(), Dv, e.m, Dv, T(1), gqi, Dk);
          mm<T>(true, false, Dk, Dv, n, T(1), e.Q, Dk, gq.data(), Dv, T(1), gmi, Dv);
        }
      }
      if (d.pre) {
        // ∂rhs = L⁻ᵀ ∂U: backward substitution with the unit upper Lᵀ
        unit_lower_solve<T>(true, n, Dv, g.Tm.data(), gr.data());
        // ∂T = −∂rhs Uᵀ (strict lower part used); rhs = cg ⊙ KS + BW W + cr ⊙ Km
        mm<T>(false, true, n, n, Dv, T(-1), gr.data(), Dv, u.data(), Dv, T(0), gT.data(), n);
        mm<T>(false, true, n, n, Dv, T(1), gr.data(), Dv, e.W, Dv, T(0), gBW.data(), n);
        mm<T>(true, false, n, Dv, n, T(1), g.BW.data(), n, gr.data(), Dv, T(1), gw, Dv);
        const T* KSp = d.ks_given ? e.KS : ks.data();
        T* gksp = d.ks_given ? gKS.data_ptr<T>() + i * n * Dv : gks.data();
        for (int t = 0; t < n; ++t) {
          const T c = g.cg[t];
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
          gcg[t] = acc;
          gcr[t] = accm;
        }
        if (!d.ks_given) {  // KS = K S was formed here
          mm<T>(true, false, Dk, Dv, n, T(1), e.K, Dk, gksp, Dv, T(1), gs, Dv);
          mm<T>(false, true, n, Dk, Dv, T(1), gksp, Dv, e.S, Dv, T(1), gk, Dk);
        }
        if (d.mom) {  // Km = K m; ∂Km = cr ⊙ ∂rhs (in the buffer of ∂Y, used above)
          T* gmi = gm.data_ptr<T>() + i * size;
          for (int t = 0; t < n; ++t) {
            const T r = g.cr[t];
#pragma omp simd
            for (int j = 0; j < Dv; ++j) gy[t * Dv + j] = r * gr[t * Dv + j];
          }
          mm<T>(true, false, Dk, Dv, n, T(1), e.K, Dk, gy.data(), Dv, T(1), gmi, Dv);
          mm<T>(false, true, n, Dk, Dv, T(1), gy.data(), Dv, e.m, Dv, T(1), gk, Dk);
        }
      }
      g.backward(e.a, e.beta, e.b, e.K, Dk, d, gcg.data(), gcr.data(), gT.data(), gBW.data(), gglast.data(),
                 gwlast.data(), ggL, grL, gdL, gdlast.data(), ga.data_ptr<T>() + i * n,
                 d.mom ? gbeta.data_ptr<T>() + i * n : nullptr, d.pre ? gb.data_ptr<T>() + i * n : zeros_b.data(),
                 gk, gG, gD, gGM, grho, gKK);
    }
  });
}

// Gradients of every input, in the order of forward's arguments (empty where the input was absent).
std::vector<torch::Tensor> backward(CHUNK_ARGS, const torch::Tensor& gSn, const torch::Tensor& gmn,
                                    const torch::Tensor& gYn) {
  const Dims d = dims(S, m, W, KS, b, Q);
  auto empty = torch::empty({0}, S.options());
  std::vector<torch::Tensor> out{torch::empty_like(S),
                                 d.mom ? torch::empty_like(m) : empty,
                                 torch::empty_like(W),
                                 torch::empty_like(K),
                                 d.ks_given ? torch::empty_like(KS) : empty,
                                 torch::empty_like(a),
                                 d.mom ? torch::empty_like(beta) : empty,
                                 d.pre ? torch::empty_like(b) : empty,
                                 d.read ? torch::empty_like(Q) : empty};
  AT_DISPATCH_FLOATING_TYPES(S.scalar_type(), "chunk_step_backward", [&] {
    backward_impl<scalar_t>(S, m, W, K, KS, a, beta, b, Q, gSn, gmn, gYn, d, out);
  });
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, mod) {
  mod.def("forward", &forward, "fused chunk step, forward");
  mod.def("backward", &backward, "fused chunk step, backward");
}
