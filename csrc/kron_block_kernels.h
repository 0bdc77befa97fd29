// Plain C++ interface of the pure-CUDA kron_block kernels (csrc/cuda/kron_block_kernels.cu).
// No torch header: the .cu file and this header compile with nvcc alone.
//
// The CUDA kron_block is computed by block rows (csrc/cuda/kron_block.cpp drives it).
// For each block row i, with j0 = i when M is symmetric and j0 = 0 otherwise:
//
//   1. weighted:  W_i[k, (j - j0)*n + b] = M[k, i, j] A[k, b],  j >= j0   (this file)
//   2. GEMM:      H[i*n:(i+1)*n, j0*n:] (+)= A^T W_i    (cuBLAS, through ATen, written
//                 straight into H's block row; rows k in chunks if W_i would be large)
//   3. mirror:    H[j*n + b, i*n + a] = H[i*n + a, j*n + b] for i < j, when symmetric
//                 (this file)
//
// so that H[i*n + a, j*n + b] = sum_k M[k,i,j] A[k,a] A[k,b]. With a symmetric M the
// GEMMs do half the work and step 3 fills the lower blocks.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace hesskit {
namespace cuda {

// Step 1 for block row i. A: (rows, n), M: (rows, m, m), W: (rows, (m - j0)*n), all
// row-major, contiguous, on the device of `stream`. Enqueues the kernel; returns the
// launch status.
template <typename T>
cudaError_t launch_kron_weighted(const T* A, const T* M, T* W, int64_t rows, int64_t n,
                                 int64_t m, int64_t i, int64_t j0, cudaStream_t stream);

// Step 3. H: (m*n, m*n), row-major, contiguous, its blocks (i, j) with i <= j
// written: copies their transposes into the blocks (j, i). Enqueues the kernel;
// returns the launch status.
template <typename T>
cudaError_t launch_kron_mirror(T* H, int64_t n, int64_t m, cudaStream_t stream);

}  // namespace cuda
}  // namespace hesskit
