// The sanitizer build's sgemm (JCB_NATIVE_SANITIZE, CMakeLists.txt), in place of OpenBLAS's:
// OpenBLAS is not instrumented, so ASan cannot see what it reads and writes on the kernels' behalf.
// CheckedSgemm checks each call against the cblas_sgemm contract the kernels rely on (row-major,
// each transpose flag one of the two, sizes not negative, every leading dimension at least the row
// length it strides over, no null matrix that holds elements) and aborts with a message naming the
// call where one does not hold; then it computes C = alpha * op(A) * op(B) + beta * C with plain
// loops (sums in double) that read every element of op(A) and op(B) and write every element of C
// (C is read only where beta is not 0, as BLAS does), so that ASan checks each of them against the
// buffers' bounds.

#include <cstdio>
#include <cstdlib>

#include "common.h"

#ifdef JCB_NATIVE_SANITIZE

namespace jcb {
namespace {

[[noreturn]] void Fail(const char* what, int order, int trans_a, int trans_b, int m, int n, int k, int lda, int ldb,
                       int ldc) {
  std::fprintf(stderr,
               "jcb CheckedSgemm: %s (order %d, trans_a %d, trans_b %d, m %d, n %d, k %d, lda %d, ldb %d, ldc %d)\n",
               what, order, trans_a, trans_b, m, n, k, lda, ldb, ldc);
  std::fflush(stderr);
  std::abort();
}

}  // namespace

void CheckedSgemm(int order, int trans_a, int trans_b, int m, int n, int k, float alpha, const float* a, int lda,
                  const float* b, int ldb, float beta, float* c, int ldc) {
  auto fail = [&](const char* what) { Fail(what, order, trans_a, trans_b, m, n, k, lda, ldb, ldc); };
  if (order != kRowMajor) fail("not row-major");
  if ((trans_a != kNoTrans && trans_a != kTrans) || (trans_b != kNoTrans && trans_b != kTrans))
    fail("a transpose flag is neither CblasNoTrans nor CblasTrans");
  if (m < 0 || n < 0 || k < 0) fail("a negative size");
  // Row-major: op(A) is m x k, stored m x k (rows of k) or, transposed, k x m (rows of m); likewise
  // op(B) k x n; C m x n. A leading dimension is at least its stored row length, and at least 1.
  const bool ta = trans_a == kTrans, tb = trans_b == kTrans;
  if (lda < std::max(1, ta ? m : k)) fail("lda below the row length of A");
  if (ldb < std::max(1, tb ? k : n)) fail("ldb below the row length of B");
  if (ldc < std::max(1, n)) fail("ldc below the row length of C");
  if (m == 0 || n == 0) return;
  if (c == nullptr) fail("C is null");
  if (k > 0 && (a == nullptr || b == nullptr)) fail("A or B is null");
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) {
      double sum = 0.0;
      for (int l = 0; l < k; ++l) {
        const float av = ta ? a[static_cast<int64_t>(l) * lda + i] : a[static_cast<int64_t>(i) * lda + l];
        const float bv = tb ? b[static_cast<int64_t>(j) * ldb + l] : b[static_cast<int64_t>(l) * ldb + j];
        sum += static_cast<double>(av) * bv;
      }
      float& out = c[static_cast<int64_t>(i) * ldc + j];
      const double old = beta == 0.0f ? 0.0 : static_cast<double>(beta) * out;
      out = static_cast<float>(alpha * sum + old);
    }
}

}  // namespace jcb

#endif  // JCB_NATIVE_SANITIZE
