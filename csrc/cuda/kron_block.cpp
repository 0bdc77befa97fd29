// CUDA glue of hesskit::kron_block: checks, contiguity, dtype dispatch, current stream,
// and the GEMMs. The weighting and mirror kernels are in kron_block_kernels.cu (pure
// CUDA); between them, one cuBLAS GEMM per block row of H and row chunk (through ATen, written
// straight into H) does the flops, in full float32 (ATen's default disallows TF32) or
// float64. Built only in CUDA builds.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

#include "../kron_block.h"
#include "../kron_block_kernels.h"

namespace hesskit {
namespace {

// Rows of A per chunk: a block row's weighted copy W_i (rows x (m - j0) n) stays within
// this many entries (or one row, if a row is larger).
constexpr int64_t kChunkEntries = int64_t{1} << 26;

at::Tensor kron_block_cuda(const at::Tensor& A, const at::Tensor& M) {
  check_kron_block_inputs(A, M, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard device_guard(A.device());
  const at::Tensor a = A.contiguous();
  const at::Tensor mm = M.contiguous();
  const int64_t N = a.size(0);
  const int64_t n = a.size(1);
  const int64_t m = mm.size(1);
  at::Tensor H = at::empty({m * n, m * n}, a.options());
  if (H.numel() == 0) {
    return H;
  }
  if (N == 0) {
    return H.zero_();
  }
  // Exactly symmetric M (every Hessian block hesskit forms): the blocks j >= i only,
  // half the flops. The comparison synchronizes with the device once.
  const bool symmetric = at::equal(mm, mm.transpose(1, 2));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(a.get_device()).stream();
  // One weighted copy at a time, sized for the widest block row (i = 0).
  const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(N, kChunkEntries / (m * n)));
  at::Tensor W = at::empty({std::min(N, chunk), m * n}, a.options());
  for (int64_t i = 0; i < m; ++i) {
    const int64_t j0 = symmetric ? i : 0;
    const int64_t width = (m - j0) * n;
    at::Tensor out = H.narrow(0, i * n, n).narrow(1, j0 * n, width);
    for (int64_t start = 0; start < N; start += chunk) {
      const int64_t rows = std::min(chunk, N - start);
      const at::Tensor a_rows = a.narrow(0, start, rows);
      const at::Tensor w_i = W.view(-1).narrow(0, 0, rows * width).view({rows, width});
      AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "kron_block_cuda_weighted", [&] {
        C10_CUDA_CHECK(cuda::launch_kron_weighted<scalar_t>(
            a_rows.const_data_ptr<scalar_t>(), mm.narrow(0, start, rows).const_data_ptr<scalar_t>(),
            w_i.mutable_data_ptr<scalar_t>(), rows, n, m, i, j0, stream));
      });
      if (start == 0) {
        at::mm_out(out, a_rows.t(), w_i);
      } else {
        out.addmm_(a_rows.t(), w_i);
      }
    }
  }
  if (symmetric) {
    AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "kron_block_cuda_mirror", [&] {
      C10_CUDA_CHECK(cuda::launch_kron_mirror<scalar_t>(H.mutable_data_ptr<scalar_t>(), n, m, stream));
    });
  }
  return H;
}

}  // namespace
}  // namespace hesskit

TORCH_LIBRARY_IMPL(hesskit, CUDA, m) {
  m.impl("kron_block", &hesskit::kron_block_cuda);
}
