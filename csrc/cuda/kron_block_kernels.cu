// Pure-CUDA kernels of hesskit::kron_block (no torch header; nvcc alone compiles this).
//
//   H[i*n + a, j*n + b] = sum_k M[k,i,j] A[k,a] A[k,b]
//
// computed by block rows: H[i-th block row] = A^T W_i with W_i[k, (j, b)] = M[k,i,j] A[k,b],
// the weighted copies of A side by side (only j >= i when M is symmetric). The GEMMs are
// cuBLAS's (csrc/cuda/kron_block.cpp); these are the two memory-bound kernels around them.
// Layouts: csrc/kron_block_kernels.h.
#include "../kron_block_kernels.h"

namespace hesskit {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxGridY = 65535;  // the hardware limit of grid.y
constexpr int kMaxBlocksX = 65535;  // weighting: more columns are covered by the stride loop
constexpr int kTile = 32;     // mirror: a 32 x 32 tile through shared memory
constexpr int kTileRows = 8;  // ... by 32 x 8 threads

// Rows k over grid.y (strided), the row's (j, b) entries over grid.x: W is written and
// A read along b, coalesced.
template <typename T>
__global__ void kron_weighted_kernel(const T* __restrict__ A, const T* __restrict__ M,
                                     T* __restrict__ W, int64_t rows, int n, int m, int i,
                                     int j0) {
  const int row_len = (m - j0) * n;
  for (int64_t k = blockIdx.y; k < rows; k += gridDim.y) {
    const T* a_row = A + k * n;
    const T* m_row = M + (k * m + i) * m + j0;
    T* w_row = W + k * row_len;
    for (int idx = blockIdx.x * blockDim.x + threadIdx.x; idx < row_len;
         idx += gridDim.x * blockDim.x) {
      const int j = idx / n;
      w_row[idx] = m_row[j] * a_row[idx - j * n];
    }
  }
}

// Transpose-copy of the upper blocks into the lower ones, tile by tile through shared
// memory so that both the reads and the writes are coalesced. Tile (bx, by) covers the
// destination rows by*32.. and columns bx*32..; an entry (r, c) is written when its
// block row r / n exceeds its block column c / n.
template <typename T>
__global__ void kron_mirror_kernel(T* __restrict__ H, int64_t n, int64_t size) {
  __shared__ T tile[kTile][kTile + 1];
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * kTile;
  const int64_t c0 = static_cast<int64_t>(blockIdx.x) * kTile;
  if ((r0 + kTile - 1) / n <= c0 / n) return;  // no entry of this tile is below the blocks' diagonal
  // Read the source tile H[c0.., r0..] (rows c, columns r), coalesced along r.
  for (int dy = threadIdx.y; dy < kTile; dy += kTileRows) {
    const int64_t c = c0 + dy, r = r0 + threadIdx.x;
    if (c < size && r < size && r / n > c / n) tile[dy][threadIdx.x] = H[c * size + r];
  }
  __syncthreads();
  for (int dy = threadIdx.y; dy < kTile; dy += kTileRows) {
    const int64_t r = r0 + dy, c = c0 + threadIdx.x;
    if (r < size && c < size && r / n > c / n) H[r * size + c] = tile[threadIdx.x][dy];
  }
}

}  // namespace

template <typename T>
cudaError_t launch_kron_weighted(const T* A, const T* M, T* W, int64_t rows, int64_t n,
                                 int64_t m, int64_t i, int64_t j0, cudaStream_t stream) {
  if (rows < 0 || n < 0 || m < 0 || i < 0 || i >= m || j0 < 0 || j0 > i) {
    return cudaErrorInvalidValue;
  }
  const int64_t row_len = (m - j0) * n;
  if (rows == 0 || row_len == 0) return cudaSuccess;
  if (row_len > (int64_t{1} << 30)) return cudaErrorInvalidValue;  // int indexing within a row
  const int64_t blocks_x = (row_len + kThreads - 1) / kThreads;
  const dim3 grid(static_cast<unsigned int>(blocks_x < kMaxBlocksX ? blocks_x : kMaxBlocksX),
                  static_cast<unsigned int>(rows < kMaxGridY ? rows : kMaxGridY));
  kron_weighted_kernel<T><<<grid, kThreads, 0, stream>>>(
      A, M, W, rows, static_cast<int>(n), static_cast<int>(m), static_cast<int>(i),
      static_cast<int>(j0));
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_kron_mirror(T* H, int64_t n, int64_t m, cudaStream_t stream) {
  if (n < 0 || m < 0) return cudaErrorInvalidValue;
  const int64_t size = m * n;
  if (m < 2 || n == 0) return cudaSuccess;  // no off-diagonal blocks
  const int64_t tiles = (size + kTile - 1) / kTile;
  if (tiles > kMaxGridY) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned int>(tiles), static_cast<unsigned int>(tiles));
  kron_mirror_kernel<T><<<grid, dim3(kTile, kTileRows), 0, stream>>>(H, n, size);
  return cudaGetLastError();
}

template cudaError_t launch_kron_weighted<float>(const float*, const float*, float*, int64_t,
                                                 int64_t, int64_t, int64_t, int64_t, cudaStream_t);
template cudaError_t launch_kron_weighted<double>(const double*, const double*, double*, int64_t,
                                                  int64_t, int64_t, int64_t, int64_t, cudaStream_t);
template cudaError_t launch_kron_mirror<float>(float*, int64_t, int64_t, cudaStream_t);
template cudaError_t launch_kron_mirror<double>(double*, int64_t, int64_t, cudaStream_t);

}  // namespace cuda
}  // namespace hesskit
