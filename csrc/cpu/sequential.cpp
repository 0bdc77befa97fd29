// CPU kernels of the sequential engine (hesskit::sequential_hbp, sequential_matmat,
// sequential_dense; the algorithms are in csrc/sequential.h, the scalar mathematics
// in csrc/sequential_math.h). GEMMs go through ATen; the pointwise steps are fused
// loops parallelized with at::parallel_for, float32 and float64.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>

#include "../sequential.h"

namespace hesskit {
namespace seq {
namespace {

// Scalar operations per task below which at::parallel_for runs serially (a task
// should outweigh the fork/join of the thread pool many times).
constexpr int64_t kGrain = int64_t{1} << 16;

int64_t grain_for(int64_t work_per_item) {
  return std::max<int64_t>(1, kGrain / std::max<int64_t>(1, work_per_item));
}

struct CpuKernels {
  static void activation_forward(const at::Tensor& z_arg, const ActivationProgram& prog,
                                 at::Tensor& a, at::Tensor& d1, at::Tensor& d2) {
    const at::Tensor z = z_arg.contiguous();
    const int64_t numel = z.numel();
    AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "sequential_activation_cpu", [&] {
      const scalar_t* zp = z.const_data_ptr<scalar_t>();
      scalar_t* ap = a.mutable_data_ptr<scalar_t>();
      scalar_t* d1p = d1.mutable_data_ptr<scalar_t>();
      scalar_t* d2p = d2.mutable_data_ptr<scalar_t>();
      at::parallel_for(0, numel, grain_for(4 * prog.count + 1), [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          activation_program<scalar_t>(prog, zp[i], ap[i], d1p[i], d2p[i]);
        }
      });
    });
  }

  static void loss_head(int loss, const at::Tensor& f_arg, const at::Tensor& target,
                        const at::Tensor& coef, at::Tensor& p, at::Tensor& g) {
    const at::Tensor f = f_arg.contiguous();
    const int64_t N = f.size(0), C = f.size(1);
    AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "sequential_loss_head_cpu", [&] {
      const scalar_t* fp = f.const_data_ptr<scalar_t>();
      const scalar_t* tp = target.const_data_ptr<scalar_t>();
      const scalar_t* cp = coef.const_data_ptr<scalar_t>();
      scalar_t* pp = p.mutable_data_ptr<scalar_t>();
      scalar_t* gp = g.mutable_data_ptr<scalar_t>();
      at::parallel_for(0, N, grain_for(4 * C), [&](int64_t begin, int64_t end) {
        for (int64_t n = begin; n < end; ++n) {
          loss_head_row<scalar_t>(loss, fp + n * C, tp + n * C, cp[n], C, pp + n * C, gp + n * C);
        }
      });
    });
  }

  static void output_hessian_apply(int loss, const at::Tensor& p, const at::Tensor& coef,
                                   const at::Tensor& U_arg, at::Tensor& Y, bool class_major) {
    const at::Tensor U = U_arg.contiguous();
    const int64_t N = p.size(0), C = p.size(1), k = U.size(1);
    AT_DISPATCH_FLOATING_TYPES(U.scalar_type(), "sequential_output_hessian_cpu", [&] {
      const scalar_t* pp = p.const_data_ptr<scalar_t>();
      const scalar_t* cp = coef.const_data_ptr<scalar_t>();
      const scalar_t* up = U.const_data_ptr<scalar_t>();
      scalar_t* yp = Y.mutable_data_ptr<scalar_t>();
      at::parallel_for(0, N * k, grain_for(3 * C), [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) {
          const OutputRow row = output_row(class_major, r, N, k, C);
          output_hessian_row<scalar_t>(loss, pp + row.n * C, cp[row.n], up + row.offset,
                                       yp + row.offset, C, row.stride);
        }
      });
    });
  }

  static void sym_scale_add_diag(at::Tensor& M, const at::Tensor& s, const at::Tensor& r) {
    const int64_t N = M.size(0), m = M.size(1);
    AT_DISPATCH_FLOATING_TYPES(M.scalar_type(), "sequential_sym_scale_cpu", [&] {
      scalar_t* Mp = M.mutable_data_ptr<scalar_t>();
      const scalar_t* sp = s.const_data_ptr<scalar_t>();
      const scalar_t* rp = r.defined() ? r.const_data_ptr<scalar_t>() : nullptr;
      at::parallel_for(0, N, grain_for(m * m), [&](int64_t begin, int64_t end) {
        for (int64_t n = begin; n < end; ++n) {
          scalar_t* Mn = Mp + n * m * m;
          const scalar_t* sn = sp + n * m;
          for (int64_t i = 0; i < m; ++i) {
            for (int64_t j = i; j < m; ++j) {
              const scalar_t v = scalar_t(0.5) * (Mn[i * m + j] + Mn[j * m + i]) * sn[i] * sn[j];
              Mn[i * m + j] = v;
              Mn[j * m + i] = v;
            }
            if (rp != nullptr) Mn[i * m + i] += rp[n * m + i];
          }
        }
      });
    });
  }

  static void broadcast_fma(const at::Tensor& X_arg, const at::Tensor& s, const at::Tensor& Y_arg,
                            const at::Tensor& q, at::Tensor& out) {
    const at::Tensor X = X_arg.contiguous();
    const at::Tensor Y = Y_arg.defined() ? Y_arg.contiguous() : Y_arg;
    const int64_t N = X.size(0), k = X.size(1), m = X.size(2);
    AT_DISPATCH_FLOATING_TYPES(X.scalar_type(), "sequential_broadcast_fma_cpu", [&] {
      const scalar_t* xp = X.const_data_ptr<scalar_t>();
      const scalar_t* sp = s.const_data_ptr<scalar_t>();
      const scalar_t* yp = Y.defined() ? Y.const_data_ptr<scalar_t>() : nullptr;
      const scalar_t* qp = Y.defined() ? q.const_data_ptr<scalar_t>() : nullptr;
      scalar_t* op = out.mutable_data_ptr<scalar_t>();
      at::parallel_for(0, N * k, grain_for(3 * m), [&](int64_t begin, int64_t end) {
        for (int64_t row = begin; row < end; ++row) {
          const scalar_t* sn = sp + (row / k) * m;
          const scalar_t* xr = xp + row * m;
          scalar_t* o = op + row * m;
          if (yp == nullptr) {
            for (int64_t i = 0; i < m; ++i) o[i] = sn[i] * xr[i];
          } else {
            const scalar_t* qn = qp + (row / k) * m;
            const scalar_t* yr = yp + row * m;
            for (int64_t i = 0; i < m; ++i) o[i] = sn[i] * xr[i] + qn[i] * yr[i];
          }
        }
      });
    });
  }
};

using CpuEntry = Entry<CpuKernels, c10::DeviceType::CPU>;

}  // namespace
}  // namespace seq
}  // namespace hesskit

TORCH_LIBRARY_IMPL(hesskit, CPU, m) {
  m.impl("sequential_hbp", &hesskit::seq::CpuEntry::hbp);
  m.impl("sequential_matmat", &hesskit::seq::CpuEntry::matmat);
  m.impl("sequential_forward", &hesskit::seq::CpuEntry::forward);
  m.impl("sequential_dense", &hesskit::seq::CpuEntry::dense);
}
