/* A Graph (e3gnn_model.h) as torch tensors, for the two model classes; internal to the model side. */
#ifndef NLMD_TORCH_GRAPH_H
#define NLMD_TORCH_GRAPH_H

#include "e3gnn_model.h"

#include <torch/torch.h>

#include <cstring>

namespace nlmd {

inline const auto kLong = torch::TensorOptions().dtype(torch::kInt64);
inline const auto kFloat = torch::TensorOptions().dtype(torch::kFloat32);

inline torch::Device torch_device(Device d)
{
  return d.is_cuda() ? torch::Device(torch::kCUDA, (c10::DeviceIndex) d.cuda) : torch::Device(torch::kCPU);
}

// n entries of v from `first`, as a tensor that shares v's memory
inline torch::Tensor long_view(const std::vector<int64_t> &v, int64_t first, int64_t n)
{
  return torch::from_blob(const_cast<int64_t *>(v.data()) + first, {n}, kLong);
}

// [2, edges]: row 0 the centre node, row 1 the neighbour node
inline torch::Tensor edge_index(const Graph &g)
{
  const int64_t ne = g.num_edges();
  auto t = torch::empty({2, ne}, kLong);
  if (ne) {
    std::memcpy(t.data_ptr<int64_t>(), g.src.data(), ne * sizeof(int64_t));
    std::memcpy(t.data_ptr<int64_t>() + ne, g.dst.data(), ne * sizeof(int64_t));
  }
  return t;
}

// [edges, 3], sharing the graph's memory
inline torch::Tensor edge_vectors(const Graph &g)
{
  return torch::from_blob(const_cast<float *>(g.vec.data()), {g.num_edges(), 3}, kFloat);
}

// a float tensor's values into a vector
inline void copy_out(const torch::Tensor &t, std::vector<float> &v)
{
  const auto c = t.to(torch::kCPU, torch::kFloat32).contiguous();
  const float *p = c.data_ptr<float>();
  v.assign(p, p + c.numel());
}

}    // namespace nlmd

#endif
