// Shared declarations of the kron_block op (CPU and CUDA implementations).
//
//   H = sum_n (a_n a_n^T) (x) M_n,   H[i*n + a, j*n + b] = sum_n M[n,i,j] A[n,a] A[n,b]
//
// A is (N, n), M is (N, m, m) and H is (m*n, m*n): the exact Hessian block of a
// Linear layer's weight W (m, n) in the order of W.reshape(-1) (row = out*n + in).
#pragma once

#include <ATen/ATen.h>
#include <c10/util/safe_numerics.h>

#include "message.h"

namespace hesskit {

// The side m*n of H, checked: raises when m*n, or the bytes of the (m*n, m*n) result,
// overflow int64 (a wrapped size would give a wrong, possibly empty, result).
inline int64_t kron_block_size(int64_t n, int64_t m) {
  int64_t size = 0, entries = 0, bytes = 0;
  TORCH_CHECK_VALUE(!c10::mul_overflows(m, n, &size) && !c10::mul_overflows(size, size, &entries)
                        && !c10::mul_overflows(entries, int64_t{8}, &bytes),
                    "kron_block: the result H of shape (m*n, m*n) with m = ", msg::num(m),
                    " (M.size(1)) and n = ", msg::num(n), " (A.size(1)) overflows int64");
  return size;
}

// Checks the arguments of kron_block for the implementation on `device_type`:
// ranks, matching N, square M, float32/float64, same dtype and same device.
inline void check_kron_block_inputs(const at::Tensor& A, const at::Tensor& M,
                                    c10::DeviceType device_type) {
  TORCH_CHECK_VALUE(A.dim() == 2, "kron_block: A must be 2-D (N, n), got ", msg::num(A.dim()), "-D");
  TORCH_CHECK_VALUE(M.dim() == 3, "kron_block: M must be 3-D (N, m, m), got ", msg::num(M.dim()), "-D");
  TORCH_CHECK_VALUE(M.size(1) == M.size(2), "kron_block: M must hold square (m, m) matrices, got ",
              msg::shape(M.sizes()));
  TORCH_CHECK_VALUE(M.size(0) == A.size(0), "kron_block: A and M must have the same number of rows N, got ",
              msg::num(A.size(0)), " and ", msg::num(M.size(0)));
  TORCH_CHECK_TYPE(A.scalar_type() == at::kFloat || A.scalar_type() == at::kDouble,
              "kron_block: A must be float32 or float64, got ", msg::dtype(A.scalar_type()));
  TORCH_CHECK_TYPE(M.scalar_type() == A.scalar_type(), "kron_block: M must have the dtype of A (",
              msg::dtype(A.scalar_type()), "), got ", msg::dtype(M.scalar_type()));
  TORCH_CHECK_VALUE(A.device().type() == device_type && M.device() == A.device(),
              "kron_block: A and M must both be on the same ", msg::device(device_type), " device, got ",
              msg::device(A.device()), " and ", msg::device(M.device()));
  kron_block_size(A.size(1), M.size(1));
}

}  // namespace hesskit
