/* SevenNet's layer-wise parallel deployment as a function of a graph: see layered_model.h. */
#include "layered_model.h"

#include "torch_graph.h"

#include <c10/util/StringUtil.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/script.h>

#include <algorithm>
#include <vector>

// defined in SevenNet's pair_e3gnn_oeq_autograd.cpp (compiled into the same plugin)
extern void pair_e3gnn_oeq_register_autograd();

namespace nlmd {

struct LayeredModel::Torch {
  std::vector<torch::jit::Module> layers;    // one TorchScript module per message-passing layer
  // the compiled layers, when loaded: forward (the last: energy and gradients) and gradient packages
  std::vector<std::unique_ptr<torch::inductor::AOTIModelPackageLoader>> forward, gradient;
};

LayeredModel::LayeredModel() : torch_(std::make_unique<Torch>()) {}
LayeredModel::~LayeredModel() = default;

void LayeredModel::load(const std::vector<std::string> &paths, Device device, bool oeq)
{
  device_ = device;
  paths_ = paths;
  torch_->layers.clear();
  if (oeq) pair_e3gnn_oeq_register_autograd();
  for (const auto &p : paths) {
    try {
      torch::jit::Module m = torch::jit::load(p, torch_device(device));
      m.eval();
      torch_->layers.push_back(m);
    } catch (...) {
      rethrow_as_model_error(p);
    }
  }
  // as SevenNet's styles do: no graph-executor re-optimisation for every new graph size
  torch::jit::setGraphExecutorOptimize(false);
}

void LayeredModel::load_packages(const std::vector<std::string> &forward, const std::vector<std::string> &gradient)
{
  torch_->forward.clear();
  torch_->gradient.clear();
  package_paths_.clear();
  if ((int) forward.size() != num_layers() || (int) gradient.size() != num_layers() - 1)
    throw ModelError(forward.empty() ? "" : forward[0],
                     c10::str("the compiled model has ", forward.size(), " layer package(s) and ", gradient.size(),
                              " gradient package(s) for a model of ", num_layers(), " layers"),
                     true);
  auto open = [&](const std::string &p) {
    try {
      package_paths_.push_back(p);
      return std::make_unique<torch::inductor::AOTIModelPackageLoader>(p, "model");
    } catch (...) {
      torch_->forward.clear();
      torch_->gradient.clear();
      rethrow_as_model_error(p);
    }
  };
  for (const auto &p : forward) torch_->forward.push_back(open(p));
  for (const auto &p : gradient) torch_->gradient.push_back(open(p));
}

bool LayeredModel::compiled() const
{
  return !torch_->forward.empty();
}

void LayeredModel::probe(double cutoff, int comm_size)
{
  boundary_dim_.clear();
  auto &layers = torch_->layers;
  const int nl = (int) layers.size();
  const torch::Device device = torch_device(device_);
  const double r = 0.5 * cutoff;
  Graph g;
  g.nlocal = 2;
  g.species = {0, 0, 0};
  g.src = {0, 1, 0, 1};
  g.dst = {1, 0, 2, 2};
  g.vec = {(float) r, 0, 0, (float) -r, 0, 0, 0, (float) r, 0, (float) -r, (float) r, 0};
  std::string at = paths_[0];
  try {
    torch::NoGradGuard no_grad;
    auto edge_vec = edge_vectors(g).clone().to(device);
    c10::Dict<std::string, torch::Tensor> in;
    in.insert("x", long_view(g.species, 0, 2).clone().to(device));
    in.insert("x_ghost", long_view(g.species, 2, 1).clone().to(device));
    in.insert("edge_index", edge_index(g).to(device));
    in.insert("edge_vec", edge_vec);
    in.insert("num_atoms", torch::full({1}, 2, kLong).to(device));
    in.insert("nlocal", torch::full({1}, 2, kLong));
    auto out = layers[0].forward({in}).toGenericDict();
    for (int k = 0; k < nl; k++) {
      at = paths_[k];
      const bool has_energy = out.contains("inferred_total_energy");
      if (k < nl - 1 && has_energy)
        throw ModelError(at,
                         c10::str(at, " is the last layer of its model (it gives the energy), but pair_coeff asks for ",
                                  nl, " layers: the model has ", k + 1),
                         true);
      if (k == nl - 1) {
        if (!has_energy)
          throw ModelError(at,
                           c10::str(at, " is not the last layer of its model (it gives no energy): the model has "
                                        "more than the ",
                                    nl, " layer(s) pair_coeff asks for"),
                           true);
        break;
      }
      if (!out.contains("x") || !out.contains("self_cont_tmp"))
        throw ModelError(at, c10::str(at, " gives no node features 'x'/'self_cont_tmp'"), true);
      const auto x = out.at("x").toTensor();
      const int dim = (int) x.size(1);
      if (dim > comm_size)
        throw ModelError(at, c10::str(at, " gives ", dim, " features per atom, more than its comm_size ", comm_size),
                         true);
      boundary_dim_.push_back(dim);
      out.insert_or_assign("x_ghost", torch::zeros({1, dim}, x.options()));
      out.insert_or_assign("edge_vec", edge_vec);
      out = layers[k + 1].forward({out}).toGenericDict();
    }
  } catch (...) {
    rethrow_as_model_error(at);
  }
}

void LayeredModel::evaluate(const Graph &graph, bool want_atomic, GhostExchange &exchange, Evaluation &out)
{
  auto &layers = torch_->layers;
  const int nl = (int) layers.size();
  const int64_t nlocal = graph.nlocal;
  const int64_t nghost = graph.num_nodes() - nlocal;
  const int64_t nedges = graph.num_edges();

  // a process without atoms has nothing to evaluate but must take part in every exchange (ghost atoms of
  // other processes may pass through it), with the same widths as the others
  if (nlocal == 0) {
    int widest = 0;
    for (int d : boundary_dim_) widest = std::max(widest, d);
    std::vector<float> ghosts((size_t) nghost * widest);
    for (int k = 1; k < nl; k++) exchange.forward(nullptr, boundary_dim_[k - 1], ghosts.data());
    for (int k = nl - 1; k >= 1; k--) exchange.reverse(nullptr, boundary_dim_[k - 1], nullptr);
    out.energy = 0.0;
    out.atomic_energy.clear();
    out.dedr.clear();
    return;
  }

  if (compiled() && nlocal >= 2 && nghost >= 2 && nedges >= 2) {
    evaluate_compiled(graph, want_atomic, exchange, out);
    return;
  }

  const torch::Device device = torch_device(device_);
  std::string at = paths_[0];
  try {
    auto edge_vec = edge_vectors(graph).clone().to(device);
    edge_vec.set_requires_grad(true);
    const auto n_atoms = torch::full({1}, nlocal, kLong);

    c10::Dict<std::string, torch::Tensor> in;
    in.insert("x", long_view(graph.species, 0, nlocal).clone().to(device));
    in.insert("x_ghost", long_view(graph.species, nlocal, nghost).clone().to(device));
    in.insert("edge_index", edge_index(graph).to(device));
    in.insert("edge_vec", edge_vec);
    in.insert("num_atoms", n_atoms.to(device));
    in.insert("nlocal", n_atoms);    // SevenNet's layers split [local; ghost] with it, on the host

    // forward, layer by layer; what the backward pass needs of every boundary k (between layer k-1 and k):
    // the outputs of layer k-1 and the (detached) inputs of layer k
    std::vector<torch::Tensor> x_out(nl), sc_out(nl), x_in(nl), sc_in(nl), x_gh(nl);
    auto res = layers[0].forward({in}).toGenericDict();
    for (int k = 1; k < nl; k++) {
      at = paths_[k];
      x_out[k] = res.at("x").toTensor();
      sc_out[k] = res.at("self_cont_tmp").toTensor();
      const int dim = boundary_dim_[k - 1];
      if (x_out[k].dim() != 2 || x_out[k].size(0) != nlocal || x_out[k].size(1) != dim)
        throw std::runtime_error(c10::str(paths_[k - 1], " gave node features of shape ", x_out[k].sizes(),
                                          " where [", nlocal, ", ", dim, "] was expected"));
      x_in[k] = x_out[k].detach().requires_grad_(true);
      sc_in[k] = sc_out[k].detach().requires_grad_(true);
      const auto xc = x_out[k].detach().to(torch::kCPU, torch::kFloat32).contiguous();
      auto xg = torch::empty({nghost, dim}, kFloat);
      exchange.forward(xc.data_ptr<float>(), dim, xg.data_ptr<float>());
      x_gh[k] = xg.to(device).requires_grad_(true);
      res.insert_or_assign("x", x_in[k]);
      res.insert_or_assign("self_cont_tmp", sc_in[k]);
      res.insert_or_assign("x_ghost", x_gh[k]);
      res.insert_or_assign("edge_vec", edge_vec);
      res = layers[k].forward({res}).toGenericDict();
    }
    at = paths_[nl - 1];
    const auto e_total = res.at("inferred_total_energy").toTensor().squeeze();
    if (want_atomic) copy_out(res.at("atomic_energy").toTensor().detach().reshape({-1}), out.atomic_energy);

    // backward, last layer first
    auto dEdr = torch::zeros({nedges, 3}, kFloat.device(device));
    std::vector<torch::Tensor> of = {e_total}, grad_of;
    for (int k = nl - 1; k >= 0; k--) {
      at = paths_[k];
      std::vector<torch::Tensor> wrt = {edge_vec};
      if (k > 0) wrt.insert(wrt.end(), {x_in[k], sc_in[k], x_gh[k]});
      const auto grads = torch::autograd::grad(of, wrt, grad_of, /*retain_graph=*/false,
                                               /*create_graph=*/false, /*allow_unused=*/true);
      if (grads[0].defined()) dEdr += grads[0];
      if (k == 0) break;
      const int dim = boundary_dim_[k - 1];
      torch::Tensor gc;    // gradients on ghost features, summed on their owners
      if (nghost > 0 && grads[3].defined()) gc = grads[3].to(torch::kCPU, torch::kFloat32).contiguous();
      auto g_owned = torch::empty({nlocal, dim}, kFloat);
      exchange.reverse(gc.defined() ? gc.data_ptr<float>() : nullptr, dim, g_owned.data_ptr<float>());
      torch::Tensor g_x = g_owned.to(device);
      if (grads[1].defined()) g_x = g_x + grads[1];
      const torch::Tensor g_sc = grads[2].defined() ? grads[2] : torch::zeros_like(sc_out[k]);
      of = {x_out[k], sc_out[k]};
      grad_of = {g_x, g_sc};
    }
    copy_out(dEdr, out.dedr);
    out.energy = e_total.item<double>();
  } catch (...) {
    rethrow_as_model_error(at);
  }
}

/* The compiled layers: forward packages first, layer by layer with the exchange of ghost features between
   them, each keeping what its gradient package needs; the last layer's package gives the energy and the
   gradients of its inputs; then the gradient packages, last layer first, each fed with the gradient of its
   outputs: the next layer's gradient of its local features plus that of its ghost features summed on their
   owners (reverse exchange). */
void LayeredModel::evaluate_compiled(const Graph &graph, bool want_atomic, GhostExchange &exchange, Evaluation &out)
{
  const int nl = num_layers();
  const int64_t nlocal = graph.nlocal;
  const int64_t nghost = graph.num_nodes() - nlocal;
  const torch::Device device = torch_device(device_);
  std::string at = package_paths_[0];
  try {
    const auto types = long_view(graph.species, 0, nlocal).to(device);
    const auto edges = edge_index(graph).to(device);
    const auto vec = edge_vectors(graph).to(device);
    std::vector<std::vector<torch::Tensor>> inputs(nl), saved(nl);
    inputs[0] = {types, long_view(graph.species, nlocal, nghost).to(device), edges, vec};
    for (int k = 0; k < nl - 1; k++) {
      at = package_paths_[k];
      auto res = torch_->forward[k]->run(inputs[k]);
      const int dim = boundary_dim_[k];
      if (res.size() < 2 || res[0].dim() != 2 || res[0].size(0) != nlocal || res[0].size(1) != dim)
        throw std::runtime_error(c10::str(at, " gave ", res.size(), " outputs, the first of shape ",
                                          res.empty() ? c10::IntArrayRef{} : res[0].sizes(), " where [", nlocal,
                                          ", ", dim, "] features were expected"));
      const auto xc = res[0].to(torch::kCPU, torch::kFloat32).contiguous();
      auto xg = torch::empty({nghost, dim}, kFloat);
      exchange.forward(xc.data_ptr<float>(), dim, xg.data_ptr<float>());
      inputs[k + 1] = {res[0], xg.to(device), res[1], types, edges, vec};
      saved[k].assign(res.begin() + 2, res.end());
    }
    at = package_paths_[nl - 1];
    auto res = torch_->forward[nl - 1]->run(inputs[nl - 1]);
    if ((int) res.size() != (nl > 1 ? 6 : 3))
      throw std::runtime_error(c10::str(at, " gave ", res.size(), " outputs where ", nl > 1 ? 6 : 3,
                                        " (energy, atomic energies, gradients) were expected"));
    out.energy = res[0].to(torch::kCPU).reshape({}).item<double>();
    if (want_atomic) copy_out(res[1].reshape({-1}), out.atomic_energy);
    auto dedr = res[2];
    // gradients of layer k's float inputs (local features, self-connection, ghost features)
    torch::Tensor g_x, g_sc, g_ghost;
    if (nl > 1) g_x = res[3], g_sc = res[4], g_ghost = res[5];
    for (int k = nl - 1; k >= 1; k--) {
      const int dim = boundary_dim_[k - 1];
      const auto gc = g_ghost.to(torch::kCPU, torch::kFloat32).contiguous();
      auto g_owned = torch::empty({nlocal, dim}, kFloat);
      exchange.reverse(gc.data_ptr<float>(), dim, g_owned.data_ptr<float>());
      at = package_paths_[nl + k - 1];
      std::vector<torch::Tensor> args = inputs[k - 1];
      args.insert(args.end(), saved[k - 1].begin(), saved[k - 1].end());
      args.push_back(g_x + g_owned.to(device));
      args.push_back(g_sc);
      saved[k - 1].clear();
      auto grads = torch_->gradient[k - 1]->run(args);
      dedr = dedr + grads[0];
      if (k > 1) g_x = grads[1], g_sc = grads[2], g_ghost = grads[3];
    }
    copy_out(dedr, out.dedr);
  } catch (...) {
    rethrow_as_model_error(at);
  }
}

}    // namespace nlmd
