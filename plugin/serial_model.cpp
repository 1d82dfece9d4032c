/* A SevenNet serial deployment as a function of a graph: see serial_model.h. */
#include "serial_model.h"

#include "torch_graph.h"

#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/script.h>

#include <c10/util/StringUtil.h>

#include <algorithm>

// defined in SevenNet's pair_e3gnn_oeq_autograd.cpp (compiled into the same plugin)
extern void pair_e3gnn_oeq_register_autograd();

namespace nlmd {

struct SerialModel::Torch {
  torch::jit::Module module;                                       // TorchScript (or the package's fallback)
  bool module_loaded = false;
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> aoti;   // the AOTInductor package, when given
};

SerialModel::SerialModel() : torch_(std::make_unique<Torch>()) {}
SerialModel::~SerialModel() = default;

bool SerialModel::loaded() const
{
  return torch_->module_loaded || torch_->aoti;
}

void SerialModel::load_torchscript(const std::string &path, Device device, bool oeq)
{
  if (path_.empty()) path_ = path;
  device_ = device;
  try {
    torch_->module = torch::jit::load(path, torch_device(device));
    torch_->module.eval();
  } catch (...) {
    rethrow_as_model_error(path);
  }
  if (oeq) pair_e3gnn_oeq_register_autograd();    // so that autograd::grad works through its kernels
  // The graph changes size at every step: the profiling executor would re-specialise and re-optimise for
  // new shapes (seconds each time). Run the model as scripted, like SevenNet's own styles do. The setting
  // is process-wide, and the layered model sets the same.
  torch::jit::setGraphExecutorOptimize(false);
  torch_->module_loaded = true;
}

/* An AOTInductor package runs on the device it was compiled for: the CPU code Inductor generated cannot
   run on a GPU (nor CUDA code on a CPU-only node). */
void SerialModel::load_package(const std::string &path, Device device, const std::string &fallback)
{
  path_ = path;
  device_ = device;
  fallback_ = fallback;
  try {
    torch_->aoti = std::make_unique<torch::inductor::AOTIModelPackageLoader>(path, "model");
  } catch (...) {
    rethrow_as_model_error(path);
  }
}

void SerialModel::evaluate(const Graph &graph, bool want_atomic, Evaluation &out)
{
  const int64_t natoms = graph.nlocal;
  const int64_t ne = graph.num_edges();
  const torch::Device device = torch_device(device_);
  auto species = long_view(graph.species, 0, natoms);
  auto index = edge_index(graph);
  auto vec = edge_vectors(graph);
  if (torch_->aoti && natoms >= 2 && ne >= 2) {
    try {
      auto res = torch_->aoti->run({species.to(device), index.to(device), vec.to(device)});
      out.energy = res[0].to(torch::kCPU).reshape({}).item<double>();
      if (want_atomic) copy_out(res[1].reshape({natoms}), out.atomic_energy);
      copy_out(res[2], out.dedr);
    } catch (...) {
      rethrow_as_model_error(path_);
    }
    return;
  }
  if (!torch_->module_loaded) {    // a package, and a graph too small for it: the TorchScript file it names
    if (fallback_.empty())
      throw ModelError(path_,
                       c10::str(path_, " is compiled for at least 2 atoms and 2 edges, this graph has ", natoms,
                                " and ", ne, ", and the TorchScript file for such graphs is missing"),
                       true);
    load_torchscript(fallback_, device_, false);
  }
  try {
    auto ev = device.is_cpu() ? vec.detach().requires_grad_(true) : vec.to(device).requires_grad_(true);
    auto num_atoms = torch::full({1}, natoms, kLong);
    torch::Dict<std::string, torch::Tensor> in;
    in.insert("x", species.to(device));
    in.insert("edge_index", index.to(device));
    in.insert("edge_vec", ev);
    in.insert("num_atoms", num_atoms.to(device));
    in.insert("nlocal", num_atoms);
    std::vector<torch::IValue> args{in};
    auto res = torch_->module.forward(args).toGenericDict();
    auto e = res.at("inferred_total_energy").toTensor().squeeze();
    if (want_atomic) copy_out(res.at("atomic_energy").toTensor().detach().reshape({natoms}), out.atomic_energy);
    copy_out(torch::autograd::grad({e}, {ev})[0], out.dedr);
    out.energy = e.detach().to(torch::kCPU).item<double>();
  } catch (...) {
    rethrow_as_model_error(torch_->aoti ? fallback_ : path_);
  }
}

void SerialModel::warm_up(const std::vector<int64_t> &species, double cutoff)
{
  Graph g;
  g.species = species;
  while (g.species.size() < 4) g.species.push_back(g.species[g.species.size() % std::max<size_t>(1, species.size())]);
  const int64_t n = g.num_nodes();
  g.nlocal = n;
  const float r = (float) (0.45 * cutoff);
  for (int64_t a = 0; a < n; ++a)
    for (int64_t b = 0; b < n; ++b) {
      if (a == b) continue;
      g.src.push_back(a);
      g.dst.push_back(b);
      g.vec.push_back(r * (float) (1 + (a + b) % 2));
      g.vec.push_back(0.1f * (float) (b - a));
      g.vec.push_back(0.05f * (float) (a * b));
    }
  Evaluation out;
  for (int k = 0; k < 3; ++k) evaluate(g, true, out);
}

}    // namespace nlmd
