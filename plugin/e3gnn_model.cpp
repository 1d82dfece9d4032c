/* What both model classes share with torch: error translation, devices, threads (see e3gnn_model.h). */
#include "e3gnn_model.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <torch/cuda.h>

namespace nlmd {

void rethrow_as_model_error(const std::string &file)
{
  try {
    throw;
  } catch (const ModelError &) {
    throw;
  } catch (const c10::Error &e) {
    throw ModelError(file, e.what_without_backtrace());
  } catch (const std::exception &e) {
    throw ModelError(file, e.what());
  }
}

int cuda_device_count()
{
  return torch::cuda::is_available() ? (int) torch::cuda::device_count() : 0;
}

void set_torch_threads(int n)
{
  if (at::get_num_threads() != n) at::set_num_threads(n);
}

}    // namespace nlmd
