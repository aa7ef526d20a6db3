// Stand-ins for the CUDA backend's entry points in a build without CUDA, so
// callers need no #ifdef: no device is ever reported, and asking for the
// backend says why it is missing.
#ifndef KILN_HAVE_CUDA

#include "kiln/backend/backend.h"
#include "kiln/core/error.h"

namespace kiln {

std::unique_ptr<Backend> make_cuda_backend(const BackendOptions&) {
  fail("this kiln was built without CUDA (rebuild with nvcc installed, or use --cpu)");
}
int cuda_device_count() { return 0; }
bool cuda_memory_info(int, size_t*, size_t*) { return false; }
std::string cuda_device_name(int) { return {}; }

}  // namespace kiln

#endif
