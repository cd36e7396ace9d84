/*
 * Forward the standard, unprefixed CBLAS GEMM entry points to scipy-openblas32.
 *
 * libmlx.so (mlx-cpu wheel) imports cblas_sgemm/cblas_dgemm/cblas_cgemm and would otherwise
 * bind them to the slow reference BLAS bundled in mlx_cpu.libs/. scipy-openblas32 exports the
 * same functions only with a "scipy_" prefix, so this shim re-exports them under the standard
 * names. It is loaded RTLD_GLOBAL before mlx.core is imported (see blas.py).
 *
 * The prototypes are declared here instead of including OpenBLAS' cblas.h so the shim builds
 * without header search paths. The enums match the CBLAS ABI (plain int-sized enums) and
 * blasint is a 32-bit int for scipy-openblas32 (LP64 interface, the same as mlx calls).
 */

enum CBLAS_ORDER { CblasRowMajor = 101, CblasColMajor = 102 };
enum CBLAS_TRANSPOSE {
  CblasNoTrans = 111,
  CblasTrans = 112,
  CblasConjTrans = 113,
  CblasConjNoTrans = 114
};
typedef int blasint;

#define SHIM_EXPORT __attribute__((visibility("default")))

void scipy_cblas_sgemm(const enum CBLAS_ORDER Order, const enum CBLAS_TRANSPOSE TransA,
                       const enum CBLAS_TRANSPOSE TransB, const blasint M, const blasint N,
                       const blasint K, const float alpha, const float *A, const blasint lda,
                       const float *B, const blasint ldb, const float beta, float *C,
                       const blasint ldc);
void scipy_cblas_dgemm(const enum CBLAS_ORDER Order, const enum CBLAS_TRANSPOSE TransA,
                       const enum CBLAS_TRANSPOSE TransB, const blasint M, const blasint N,
                       const blasint K, const double alpha, const double *A, const blasint lda,
                       const double *B, const blasint ldb, const double beta, double *C,
                       const blasint ldc);
void scipy_cblas_cgemm(const enum CBLAS_ORDER Order, const enum CBLAS_TRANSPOSE TransA,
                       const enum CBLAS_TRANSPOSE TransB, const blasint M, const blasint N,
                       const blasint K, const void *alpha, const void *A, const blasint lda,
                       const void *B, const blasint ldb, const void *beta, void *C,
                       const blasint ldc);

SHIM_EXPORT void cblas_sgemm(const enum CBLAS_ORDER Order, const enum CBLAS_TRANSPOSE TransA,
                             const enum CBLAS_TRANSPOSE TransB, const blasint M, const blasint N,
                             const blasint K, const float alpha, const float *A,
                             const blasint lda, const float *B, const blasint ldb,
                             const float beta, float *C, const blasint ldc) {
  scipy_cblas_sgemm(Order, TransA, TransB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

SHIM_EXPORT void cblas_dgemm(const enum CBLAS_ORDER Order, const enum CBLAS_TRANSPOSE TransA,
                             const enum CBLAS_TRANSPOSE TransB, const blasint M, const blasint N,
                             const blasint K, const double alpha, const double *A,
                             const blasint lda, const double *B, const blasint ldb,
                             const double beta, double *C, const blasint ldc) {
  scipy_cblas_dgemm(Order, TransA, TransB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

SHIM_EXPORT void cblas_cgemm(const enum CBLAS_ORDER Order, const enum CBLAS_TRANSPOSE TransA,
                             const enum CBLAS_TRANSPOSE TransB, const blasint M, const blasint N,
                             const blasint K, const void *alpha, const void *A,
                             const blasint lda, const void *B, const blasint ldb,
                             const void *beta, void *C, const blasint ldc) {
  scipy_cblas_cgemm(Order, TransA, TransB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
