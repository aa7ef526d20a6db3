/* A stand-in for cuBLAS 12, for bench/pack_llama_cpp.sh only: Debian's
 * ggml CUDA backend links libcublas.so.12, which the device image lacks
 * (CUDA 13 only) and which is far too large to carry. The backend's
 * quantized products (MMQ, MMVQ) and flash attention are its own kernels,
 * and it makes a cuBLAS handle only on first use, so the block-format runs
 * the side by side measures never call these; if one did, it fails with
 * CUBLAS_STATUS_NOT_SUPPORTED and ggml stops with that message. */
#define STUB(name) \
  int name() { return 15; /* CUBLAS_STATUS_NOT_SUPPORTED */ }
STUB(cublasCreate_v2)
STUB(cublasDestroy_v2)
STUB(cublasGemmBatchedEx)
STUB(cublasGemmEx)
STUB(cublasGemmStridedBatchedEx)
STUB(cublasSetMathMode)
STUB(cublasSetStream_v2)
STUB(cublasSetWorkspace_v2)
STUB(cublasSgemmBatched)
STUB(cublasSgemmStridedBatched)
STUB(cublasSgemm_v2)
STUB(cublasStrsmBatched)
const char* cublasGetStatusString(int status) {
  (void)status;
  return "cuBLAS is a stand-in here (bench/cublas_stub.c): not available";
}
