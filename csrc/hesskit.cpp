// hesskit._C: build information (pybind11) and the schemas of every hesskit op.
//
// The schemas live here, once; each op's kernels are registered next to their code
// with TORCH_LIBRARY_IMPL (csrc/cpu/<op>.cpp, csrc/cuda/<op>.cpp). Importing
// hesskit._C runs these static registrations, which makes torch.ops.hesskit.* exist.
#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <torch/version.h>

#ifdef HESSKIT_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

// HESSKIT_VERSION is set by setup.py from hesskit/_version.py.
#define HESSKIT_STRINGIFY_(x) #x
#define HESSKIT_STRINGIFY(x) HESSKIT_STRINGIFY_(x)
#ifdef HESSKIT_VERSION
#define HESSKIT_VERSION_STRING HESSKIT_STRINGIFY(HESSKIT_VERSION)
#else
#define HESSKIT_VERSION_STRING "unknown"
#endif

namespace {

std::string compiler_string() {
#if defined(__clang__)
  return std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  return std::string("gcc ") + __VERSION__;
#elif defined(_MSC_VER)
  return "msvc " + std::to_string(_MSC_VER);
#else
  return "unknown";
#endif
}

// What this binary was built with and how it runs now.
pybind11::dict build_info() {
  pybind11::dict info;
  info["version"] = HESSKIT_VERSION_STRING;
  info["torch_version"] = TORCH_VERSION;  // the torch headers it was compiled against
#ifdef HESSKIT_WITH_CUDA
  info["cuda"] = true;
  info["cuda_runtime_version"] = CUDART_VERSION;
#else
  info["cuda"] = false;
  info["cuda_runtime_version"] = pybind11::none();
#endif
#ifdef _OPENMP
  info["openmp"] = _OPENMP;  // yyyymm of the OpenMP specification
#else
  info["openmp"] = pybind11::none();
#endif
  info["num_threads"] = at::get_num_threads();  // intra-op threads of at::parallel_for
  info["compiler"] = compiler_string();
  return info;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "hesskit native kernels: registers torch.ops.hesskit.*";
  m.def("build_info", &build_info,
        "Dict: version, torch_version, cuda, cuda_runtime_version, openmp, num_threads, compiler.");
}

TORCH_LIBRARY(hesskit, m) {
  // kron_block: exact Hessian block of a Linear layer's weight,
  //   H[i*n + a, j*n + b] = sum_k M[k,i,j] A[k,a] A[k,b],  A (N, n), M (N, m, m), H (m*n, m*n).
  m.def("kron_block(Tensor A, Tensor M) -> Tensor");
}

// ---- sequential engine (csrc/sequential.h; kernels csrc/cpu/sequential.cpp,
// ---- csrc/cuda/sequential.cpp) --------------------------------------------------
// A chain a_0 = X, z_l = a_{l-1} W_l^T + b_l, a_l = s_l(z_l), f = a_L, where s_l is
// the composition of act_counts[l] activations (codes and two arguments each, see
// csrc/sequential_math.h), and the normalized loss sum_n coef_n Phi(f_n) - <target_n, f_n>
// (Phi = logsumexp for loss="cross_entropy", |f|^2/2 for "mse"). kind is "hessian",
// "ggn" or "functional" (Hessian minus GGN). Flat parameter order [W_1.flatten(), b_1, ...].
TORCH_LIBRARY_FRAGMENT(hesskit, m) {
  // For every selected layer: its input a_{l-1} (N, n_l) and the per-sample Hessian of
  // the loss w.r.t. its outputs z_l, (N, m_l, m_l) (backward Hessian propagation).
  m.def("sequential_hbp(Tensor X, Tensor[] weights, Tensor?[] biases, int[] act_codes, "
        "float[] act_args, int[] act_counts, str loss, Tensor target, Tensor coef, int[] layers, "
        "str kind) -> (Tensor[], Tensor[])");
  // Curvature times V (P, k) over all layers' parameters: (P, k). With `state` (the
  // output of sequential_forward for the same arguments) the forward pass is skipped.
  m.def("sequential_matmat(Tensor X, Tensor[] weights, Tensor?[] biases, int[] act_codes, "
        "float[] act_args, int[] act_counts, str loss, Tensor target, Tensor coef, Tensor V, "
        "str kind, Tensor[]? state=None) -> Tensor");
  // The forward pass that sequential_matmat needs, feature-major (csrc/sequential.h):
  // [a~_l (n_l+bias, N)]*L, [s'_l (m_l, N)]*L, p (N, C), and for kind != "ggn" also
  // [s''_l . g_a,l (m_l, N)]*L, [g_z,l (m_l, N)]*L.
  m.def("sequential_forward(Tensor X, Tensor[] weights, Tensor?[] biases, int[] act_codes, "
        "float[] act_args, int[] act_counts, str loss, Tensor target, Tensor coef, "
        "str kind) -> Tensor[]");
  // The explicit curvature matrix over the selected layers' parameters (P_sel, P_sel).
  m.def("sequential_dense(Tensor X, Tensor[] weights, Tensor?[] biases, int[] act_codes, "
        "float[] act_args, int[] act_counts, str loss, Tensor target, Tensor coef, int[] layers, "
        "str kind) -> Tensor");
}
