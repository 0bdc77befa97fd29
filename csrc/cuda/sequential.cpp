// CUDA glue of the sequential engine (hesskit::sequential_hbp, sequential_matmat,
// sequential_dense): the device-generic algorithms of csrc/sequential.h with GEMMs on
// cuBLAS through ATen and the pointwise kernels of sequential_kernels.cu, all on the
// current stream. Built only in CUDA builds.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../sequential.h"
#include "../sequential_kernels.h"

namespace hesskit {
namespace seq {
namespace {

cudaStream_t stream_of(const at::Tensor& t) {
  return c10::cuda::getCurrentCUDAStream(t.get_device()).stream();
}

template <typename scalar_t>
const scalar_t* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<scalar_t>() : nullptr;
}

struct CudaKernels {
  static void activation_forward(const at::Tensor& z_arg, const ActivationProgram& prog,
                                 at::Tensor& a, at::Tensor& d1, at::Tensor& d2) {
    const at::Tensor z = z_arg.contiguous();
    AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "sequential_activation_cuda", [&] {
      C10_CUDA_CHECK(cuda::launch_activation_forward<scalar_t>(
          z.const_data_ptr<scalar_t>(), prog, a.mutable_data_ptr<scalar_t>(),
          d1.mutable_data_ptr<scalar_t>(), d2.mutable_data_ptr<scalar_t>(), z.numel(),
          stream_of(z)));
    });
  }

  static void loss_head(int loss, const at::Tensor& f_arg, const at::Tensor& target,
                        const at::Tensor& coef, at::Tensor& p, at::Tensor& g) {
    const at::Tensor f = f_arg.contiguous();
    AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "sequential_loss_head_cuda", [&] {
      C10_CUDA_CHECK(cuda::launch_loss_head<scalar_t>(
          loss, f.const_data_ptr<scalar_t>(), target.const_data_ptr<scalar_t>(),
          coef.const_data_ptr<scalar_t>(), p.mutable_data_ptr<scalar_t>(),
          g.mutable_data_ptr<scalar_t>(), f.size(0), f.size(1), stream_of(f)));
    });
  }

  static void output_hessian_apply(int loss, const at::Tensor& p, const at::Tensor& coef,
                                   const at::Tensor& U_arg, at::Tensor& Y, bool class_major) {
    const at::Tensor U = U_arg.contiguous();
    AT_DISPATCH_FLOATING_TYPES(U.scalar_type(), "sequential_output_hessian_cuda", [&] {
      C10_CUDA_CHECK(cuda::launch_output_hessian_apply<scalar_t>(
          loss, p.const_data_ptr<scalar_t>(), coef.const_data_ptr<scalar_t>(),
          U.const_data_ptr<scalar_t>(), Y.mutable_data_ptr<scalar_t>(), p.size(0), U.size(1),
          p.size(1), class_major, stream_of(U)));
    });
  }

  static void sym_scale_add_diag(at::Tensor& M, const at::Tensor& s, const at::Tensor& r) {
    AT_DISPATCH_FLOATING_TYPES(M.scalar_type(), "sequential_sym_scale_cuda", [&] {
      C10_CUDA_CHECK(cuda::launch_sym_scale_add_diag<scalar_t>(
          M.mutable_data_ptr<scalar_t>(), s.const_data_ptr<scalar_t>(), data_or_null<scalar_t>(r),
          M.size(0), M.size(1), stream_of(M)));
    });
  }

  static void broadcast_fma(const at::Tensor& X_arg, const at::Tensor& s, const at::Tensor& Y_arg,
                            const at::Tensor& q, at::Tensor& out) {
    const at::Tensor X = X_arg.contiguous();
    const at::Tensor Y = Y_arg.defined() ? Y_arg.contiguous() : Y_arg;
    AT_DISPATCH_FLOATING_TYPES(X.scalar_type(), "sequential_broadcast_fma_cuda", [&] {
      C10_CUDA_CHECK(cuda::launch_broadcast_fma<scalar_t>(
          X.const_data_ptr<scalar_t>(), s.const_data_ptr<scalar_t>(), data_or_null<scalar_t>(Y),
          Y.defined() ? q.const_data_ptr<scalar_t>() : nullptr, out.mutable_data_ptr<scalar_t>(),
          X.size(0), X.size(1), X.size(2), stream_of(X)));
    });
  }
};

using CudaEntry = Entry<CudaKernels, c10::DeviceType::CUDA>;

}  // namespace
}  // namespace seq
}  // namespace hesskit

TORCH_LIBRARY_IMPL(hesskit, CUDA, m) {
  m.impl("sequential_hbp", &hesskit::seq::CudaEntry::hbp);
  m.impl("sequential_matmat", &hesskit::seq::CudaEntry::matmat);
  m.impl("sequential_forward", &hesskit::seq::CudaEntry::forward);
  m.impl("sequential_dense", &hesskit::seq::CudaEntry::dense);
}
