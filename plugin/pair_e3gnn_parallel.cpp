/* pair_style e3gnn/parallel (nlmd's own implementation; see pair_e3gnn_parallel.h and docs/parallel.md).

   How SevenNet's parallel deployment is cut: deployed_parallel_<k>.pt holds message-passing layer k (layer 0
   also embeds the atom types of local and ghost atoms, the last layer also reduces to the energy). A layer
   takes a dictionary with the features of the local atoms ("x"), of the ghost atoms ("x_ghost"), the
   self-connection term carried over from the previous layer ("self_cont_tmp"), the edges ("edge_index":
   row 0 the centre, always local, row 1 the neighbour as an index into [local; ghost]) and the edge vectors
   ("edge_vec" = x_neighbour - x_centre); it returns the new local features, or the energy.

   Forward: layer 0 runs on atom types; before every later layer the local features go into a per-atom
   host buffer, Comm::forward_comm fills the ghost rows from their owners, and the ghost rows of the graph
   become "x_ghost". Each layer's inputs are detached leaves, so every layer is its own autograd graph.
   Backward, last layer first: the gradient of the layer's output with respect to its edge vectors is added
   to dE/d(edge_vec); the gradient with respect to its ghost features goes into the ghost rows of the buffer
   and Comm::reverse_comm sums it into the owners, which with the gradient with respect to the local
   features is the gradient flowing into the previous layer's output. Forces follow from dE/d(edge_vec) on
   local and ghost atoms (LAMMPS sums ghost forces into their owners, newton on), the virial from
   -sum(edge_vec x dE/d(edge_vec)). */
#include "pair_e3gnn_parallel.h"

#include "atom.h"
#include "comm.h"
#include "error.h"
#include "force.h"
#include "memory.h"
#include "model_metadata.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "update.h"
#include "utils.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

using namespace LAMMPS_NS;

// defined in SevenNet's pair_e3gnn_oeq_autograd.cpp (compiled into the same plugin)
extern void pair_e3gnn_oeq_register_autograd();

namespace {

// a layer file that does not fit the chain pair_coeff describes (reported as it is, not as a torch failure)
struct ChainError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

const auto kLong = torch::TensorOptions().dtype(torch::kInt64);
const auto kFloat = torch::TensorOptions().dtype(torch::kFloat32);

std::string layer_file(const std::string &dir, int k)
{
  return (std::filesystem::path(dir) / ("deployed_parallel_" + std::to_string(k) + ".pt")).string();
}

// number of deployed_parallel_<k>.pt files with consecutive k from 0 in a directory
int count_layer_files(const std::string &dir)
{
  int n = 0;
  while (std::filesystem::is_regular_file(layer_file(dir, n))) ++n;
  return n;
}

torch::Tensor long_tensor(const std::vector<int64_t> &v)
{
  return torch::from_blob(const_cast<int64_t *>(v.data()), {(int64_t) v.size()}, kLong).clone();
}

}    // namespace

PairE3GNNParallel::PairE3GNNParallel(LAMMPS *lmp) : PairE3GNNBase(lmp), device(torch::kCPU)
{
  comm_forward = 0;
  comm_reverse = 0;
}



void PairE3GNNParallel::settings(int narg, char ** /*arg*/)
{
  if (narg != 0)
    error->all(FLERR, "pair_style e3gnn/parallel takes no arguments (the model is given by pair_coeff * * "
                      "<num_layers> <deployed_parallel dir> <elements>)");
}

void PairE3GNNParallel::select_device()
{
  // one GPU per rank, chosen by the rank's index among the ranks of its node; the exchange goes
  // through host memory either way (the LAMMPS comm API packs double buffers on the host)
  if (torch::cuda::is_available()) {
    MPI_Comm node;
    MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, comm->me, MPI_INFO_NULL, &node);
    int node_rank = 0;
    MPI_Comm_rank(node, &node_rank);
    MPI_Comm_free(&node);
    const int ndev = (int) torch::cuda::device_count();
    device = torch::Device(torch::kCUDA, (c10::DeviceIndex) (node_rank % ndev));
    device_name = fmt::format("CUDA:{} (rank 0 is node-local rank {}; {} GPU(s) visible)", node_rank % ndev,
                              node_rank, ndev);
  } else {
    device = torch::Device(torch::kCPU);
    device_name = "CPU";
  }
}

void PairE3GNNParallel::coeff(int narg, char **arg)
{
  const char *usage = "expected `pair_coeff * * <num_layers> <deployed_parallel dir> <element of type 1> "
                      "<element of type 2> ...` (SevenNet's syntax)";
  if (narg < 5 || strcmp(arg[0], "*") != 0 || strcmp(arg[1], "*") != 0)
    error->all(FLERR, "Incorrect pair_coeff for e3gnn/parallel: {}", usage);

  const int nlayers = utils::inumeric(FLERR, arg[2], false, lmp);
  if (nlayers < 1)
    error->all(FLERR, "pair_coeff e3gnn/parallel: the number of layers must be positive, got {}", arg[2]);

  // the model: a deployed_parallel directory, or (SevenNet's alternative) the layer files one by one
  std::vector<std::string> paths;
  int elem_arg = 4;
  const std::string where = arg[3];
  if (std::filesystem::is_directory(where)) {
    for (int k = 0; k < nlayers; k++) {
      const std::string p = layer_file(where, k);
      if (!std::filesystem::is_regular_file(p))
        error->all(FLERR,
                   "pair_coeff e3gnn/parallel: layer file {} is missing: {} holds {} layer file(s) "
                   "(deployed_parallel_0.pt ...) but pair_coeff asks for {} layers",
                   p, where, count_layer_files(where), nlayers);
      paths.push_back(p);
    }
    const int found = count_layer_files(where);
    if (found != nlayers)
      error->all(FLERR,
                 "pair_coeff e3gnn/parallel: {} holds a model of {} layers (deployed_parallel_0.pt ... "
                 "deployed_parallel_{}.pt) but pair_coeff gives {}: use `pair_coeff * * {} {} <elements>`",
                 where, found, found - 1, nlayers, found, where);
  } else if (std::filesystem::is_regular_file(where)) {
    if (narg < 3 + nlayers + 1)
      error->all(FLERR, "pair_coeff e3gnn/parallel: {} layer files and the elements are expected; {}", nlayers,
                 usage);
    for (int k = 0; k < nlayers; k++) paths.emplace_back(arg[3 + k]);
    elem_arg = 3 + nlayers;
  } else {
    error->all(FLERR, "pair_coeff e3gnn/parallel: {} is neither a deployed_parallel directory nor a layer file",
               where);
  }

  // metadata of every layer: one model, one cutoff, one species list
  std::vector<nlmd::ModelMetadata> metas;
  for (const auto &p : paths) {
    try {
      metas.push_back(nlmd::read_model_metadata(p));
    } catch (const std::exception &e) {
      error->all(FLERR, "pair_style e3gnn/parallel cannot use the model: {}", e.what());
    }
  }
  const nlmd::ModelMetadata &meta = metas.front();
  for (const auto &m : metas) {
    if (m.get("model_type") != "E3_equivariant_model")
      error->all(FLERR, "pair_style e3gnn/parallel: {} has model_type '{}', expected 'E3_equivariant_model'",
                 m.path, m.get("model_type"));
    if (m.get("comm_size", "").empty())
      error->all(FLERR,
                 "pair_style e3gnn/parallel: {} has no 'comm_size' metadata, so it is not a layer of a parallel "
                 "deployment; deploy with `nlmd deploy` (deployed_parallel/) or use pair_style e3gnn with "
                 "deployed_serial.pt",
                 m.path);
    if (m.get("dtype", "single") != "single")
      error->all(FLERR, "pair_style e3gnn/parallel: {} has dtype '{}'; only single precision models are supported",
                 m.path, m.get("dtype"));
    if (m.cutoff != meta.cutoff || m.species != meta.species || m.get("comm_size") != meta.get("comm_size"))
      error->all(FLERR,
                 "pair_style e3gnn/parallel: {} and {} disagree on cutoff, species or comm_size: they are not "
                 "layers of one deployment",
                 meta.path, m.path);
  }
  try {
    comm_size = std::stoi(meta.get("comm_size"));
  } catch (const std::exception &) {
    error->all(FLERR, "pair_style e3gnn/parallel: {} has comm_size '{}', expected an integer", meta.path,
               meta.get("comm_size"));
  }
  if (comm_size <= 0 || meta.cutoff <= 0.0)
    error->all(FLERR, "pair_style e3gnn/parallel: {} has comm_size {} and cutoff {}: both must be positive",
               meta.path, comm_size, meta.cutoff);

  // elements, one per atom type, any order
  std::vector<std::string> elements(arg + elem_arg, arg + narg);
  if ((int) elements.size() != atom->ntypes)
    error->all(FLERR,
               "pair_coeff e3gnn/parallel lists {} element(s) but the system has {} atom type(s): give exactly "
               "one element per atom type, in type order",
               elements.size(), atom->ntypes);
  const std::string bad = nlmd::check_species(meta, elements);
  if (!bad.empty()) error->all(FLERR, "pair_coeff e3gnn/parallel: {}", bad);

  if (!allocated) allocate();
  for (int t = 1; t <= atom->ntypes; t++) {
    const auto it = std::find(meta.species.begin(), meta.species.end(), elements[t - 1]);
    map[t] = (int) (it - meta.species.begin());
  }
  cutoff = meta.cutoff;
  for (int i = 1; i <= atom->ntypes; i++)
    for (int j = 1; j <= atom->ntypes; j++) {
      setflag[i][j] = 1;
      cutsq[i][j] = cutoff * cutoff;
    }

  // the comm buffers are sized from these when the run is set up (Comm::init), so set them here
  comm_forward = comm_size;
  comm_reverse = comm_size;

  select_device();
  if (meta.get("oeq", "no") == "yes") pair_e3gnn_oeq_register_autograd();
  load_layers(paths);
  probe_layers();

  if (comm->me == 0) {
    std::string types;
    for (size_t i = 0; i < elements.size(); ++i) types += fmt::format(" {}={}", i + 1, elements[i]);
    utils::logmesg(lmp,
                   "e3gnn/parallel: {} layer(s) from {} (SevenNet {}, {} precision, cutoff {} A, comm_size {}, "
                   "{} species, deployed {}); features per layer boundary: {}; device {}; types:{}\n",
                   nlayers, where, meta.get("version"), meta.get("dtype"), cutoff, comm_size, meta.species.size(),
                   meta.get("time"), model_description(), device_name, types);
  }
}

std::string PairE3GNNParallel::model_description() const
{
  std::string s;
  for (size_t k = 0; k < boundary_dim.size(); ++k) s += (k ? " " : "") + std::to_string(boundary_dim[k]);
  return s.empty() ? "none (one layer)" : s;
}

void PairE3GNNParallel::load_layers(const std::vector<std::string> &paths)
{
  layers.clear();
  layer_paths = paths;
  for (const auto &p : paths) {
    try {
      torch::jit::Module m = torch::jit::load(p, device);
      m.eval();
      layers.push_back(m);
    } catch (const c10::Error &e) {
      error->all(FLERR, "pair_style e3gnn/parallel cannot load {}: {}", p, e.what_without_backtrace());
    } catch (const std::exception &e) {
      error->all(FLERR, "pair_style e3gnn/parallel cannot load {}: {}", p, e.what());
    }
  }
  // as SevenNet's styles do: no graph-executor re-optimisation for every new graph size
  torch::jit::setGraphExecutorOptimize(false);
}

/* Run the layers once on a three-atom graph (two local atoms, one ghost): this learns the width of the
   features exchanged at every layer boundary (ranks without atoms need it to take part in the exchange)
   and checks that the files form one model: only the last layer may give the energy. Every rank does the
   same, so a failure is reported by all of them. */
void PairE3GNNParallel::probe_layers()
{
  boundary_dim.clear();
  const int nl = (int) layers.size();
  const double r = 0.5 * cutoff;
  std::vector<float> vec = {(float) r, 0, 0, (float) -r, 0, 0, 0, (float) r, 0, (float) -r, (float) r, 0};
  std::vector<int64_t> src = {0, 1, 0, 1}, dst = {1, 0, 2, 2};
  std::string at = layer_paths[0];
  try {
    torch::NoGradGuard no_grad;
    auto edge_vec = torch::from_blob(vec.data(), {4, 3}, kFloat).clone().to(device);
    c10::Dict<std::string, torch::Tensor> in;
    in.insert("x", torch::zeros({2}, kLong).to(device));
    in.insert("x_ghost", torch::zeros({1}, kLong).to(device));
    in.insert("edge_index", torch::stack({long_tensor(src), long_tensor(dst)}).to(device));
    in.insert("edge_vec", edge_vec);
    in.insert("num_atoms", torch::full({1}, 2, kLong).to(device));
    in.insert("nlocal", torch::full({1}, 2, kLong));
    auto out = layers[0].forward({in}).toGenericDict();
    for (int k = 0; k < nl; k++) {
      at = layer_paths[k];
      const bool has_energy = out.contains("inferred_total_energy");
      if (k < nl - 1 && has_energy)
        throw ChainError(fmt::format("pair_coeff e3gnn/parallel: {} is the last layer of its model (it gives "
                                     "the energy), but pair_coeff asks for {} layers: the model has {}",
                                     at, nl, k + 1));
      if (k == nl - 1) {
        if (!has_energy)
          throw ChainError(fmt::format("pair_coeff e3gnn/parallel: {} is not the last layer of its model (it "
                                       "gives no energy): the model has more than the {} layer(s) pair_coeff "
                                       "asks for",
                                       at, nl));
        break;
      }
      if (!out.contains("x") || !out.contains("self_cont_tmp"))
        throw ChainError(fmt::format("pair_style e3gnn/parallel: {} gives no node features 'x'/'self_cont_tmp'",
                                     at));
      const auto x = out.at("x").toTensor();
      const int dim = (int) x.size(1);
      if (dim > comm_size)
        throw ChainError(fmt::format("pair_style e3gnn/parallel: {} gives {} features per atom, more than its "
                                     "comm_size {}",
                                     at, dim, comm_size));
      boundary_dim.push_back(dim);
      out.insert_or_assign("x_ghost", torch::zeros({1, dim}, x.options()));
      out.insert_or_assign("edge_vec", edge_vec);
      out = layers[k + 1].forward({out}).toGenericDict();
    }
  } catch (const ChainError &e) {
    error->all(FLERR, "{}", e.what());
  } catch (const c10::Error &e) {
    error->all(FLERR, "pair_style e3gnn/parallel: test evaluation of {} failed: {}", at,
               e.what_without_backtrace());
  } catch (const std::exception &e) {
    error->all(FLERR, "pair_style e3gnn/parallel: test evaluation of {} failed: {}", at, e.what());
  }
}

void PairE3GNNParallel::init_style()
{
  if (layers.empty()) error->all(FLERR, "pair_style e3gnn/parallel: pair_coeff has not loaded a model");
  if (force->newton_pair == 0)
    error->all(FLERR, "pair_style e3gnn/parallel requires newton pair on (the gradients of ghost atoms are "
                      "summed into their owners by reverse communication)");
  if (comm->style != Comm::BRICK)
    error->all(FLERR, "pair_style e3gnn/parallel supports comm_style brick only (the default); this run uses "
                      "comm_style tiled");
  if (strcmp(update->unit_style, "metal") != 0)
    error->all(FLERR, "pair_style e3gnn/parallel requires units metal (SevenNet models use eV and Angstrom); "
                      "this run uses units {}",
               update->unit_style);
  neighbor->add_request(this, NeighConst::REQ_FULL);
}

double PairE3GNNParallel::init_one(int i, int j)
{
  if (setflag[i][j] == 0) error->all(FLERR, "pair_style e3gnn/parallel: pair_coeff * * was not given");
  return cutoff;    // ghost atoms to one model cutoff (plus the neighbor skin)
}

/* ---------------------------------------------------------------------------------------------------------
   feature exchange
------------------------------------------------------------------------------------------------------------ */

void PairE3GNNParallel::exchange_features(const torch::Tensor &x_local, int nlocal, int nall,
                                          const std::vector<int> &ghost_atoms, torch::Tensor &x_ghost, int dim)
{
  comm_dim = dim;
  comm_buf.resize((size_t) nall * dim);
  if (nlocal > 0) {
    const auto xc = x_local.to(torch::kCPU, torch::kFloat32).contiguous();
    const float *p = xc.data_ptr<float>();
    std::copy(p, p + (size_t) nlocal * dim, comm_buf.begin());
  }
  comm->forward_comm(this, dim);
  const int ng = (int) ghost_atoms.size();
  x_ghost = torch::empty({ng, dim}, kFloat);
  float *q = x_ghost.data_ptr<float>();
  for (int k = 0; k < ng; k++) {
    const double *row = comm_buf.data() + (size_t) ghost_atoms[k] * dim;
    for (int d = 0; d < dim; d++) q[(size_t) k * dim + d] = (float) row[d];
  }
}

void PairE3GNNParallel::exchange_gradients(const torch::Tensor &g_ghost, int nlocal, int nall,
                                           const std::vector<int> &ghost_atoms, torch::Tensor &g_local, int dim)
{
  comm_dim = dim;
  comm_buf.assign((size_t) nall * dim, 0.0);
  const int ng = (int) ghost_atoms.size();
  if (ng > 0 && g_ghost.defined()) {
    const auto gc = g_ghost.to(torch::kCPU, torch::kFloat32).contiguous();
    const float *p = gc.data_ptr<float>();
    for (int k = 0; k < ng; k++) {
      double *row = comm_buf.data() + (size_t) ghost_atoms[k] * dim;
      for (int d = 0; d < dim; d++) row[d] = p[(size_t) k * dim + d];
    }
  }
  comm->reverse_comm(this, dim);
  g_local = torch::empty({nlocal, dim}, kFloat);
  float *q = g_local.data_ptr<float>();
  for (size_t m = 0; m < (size_t) nlocal * dim; m++) q[m] = (float) comm_buf[m];
}

int PairE3GNNParallel::pack_forward_comm(int n, int *list, double *buf, int /*pbc_flag*/, int * /*pbc*/)
{
  int m = 0;
  for (int i = 0; i < n; i++) {
    const double *row = comm_buf.data() + (size_t) list[i] * comm_dim;
    for (int d = 0; d < comm_dim; d++) buf[m++] = row[d];
  }
  return m;
}

void PairE3GNNParallel::unpack_forward_comm(int n, int first, double *buf)
{
  std::copy(buf, buf + (size_t) n * comm_dim, comm_buf.begin() + (size_t) first * comm_dim);
}

int PairE3GNNParallel::pack_reverse_comm(int n, int first, double *buf)
{
  std::copy(comm_buf.begin() + (size_t) first * comm_dim, comm_buf.begin() + (size_t) (first + n) * comm_dim,
            buf);
  return n * comm_dim;
}

void PairE3GNNParallel::unpack_reverse_comm(int n, int *list, double *buf)
{
  int m = 0;
  for (int i = 0; i < n; i++) {
    double *row = comm_buf.data() + (size_t) list[i] * comm_dim;
    for (int d = 0; d < comm_dim; d++) row[d] += buf[m++];
  }
}

/* ---------------------------------------------------------------------------------------------------------
   compute
------------------------------------------------------------------------------------------------------------ */

void PairE3GNNParallel::compute(int eflag, int vflag)
{
  ev_init(eflag, vflag);

  double **x = atom->x;
  double **f = atom->f;
  const int *type = atom->type;
  const int nlocal = atom->nlocal;
  const int nall = nlocal + atom->nghost;
  const int nl = (int) layers.size();
  const double cutsq_model = cutoff * cutoff;

  // graph: centres are the local atoms (graph node = LAMMPS index); a neighbour within the cutoff is its
  // local node, or a ghost node numbered in order of first appearance
  std::vector<int64_t> local_types(nlocal);
  for (int i = 0; i < nlocal; i++) local_types[i] = map[type[i]];
  std::vector<int> ghost_node(nall - nlocal, -1);
  std::vector<int> ghost_atoms;    // ghost node -> LAMMPS index
  std::vector<int64_t> ghost_types, src, dst;
  std::vector<int> nbr;    // LAMMPS index of every edge's neighbour
  std::vector<float> vec;
  const int inum = list->inum;
  for (int ii = 0; ii < inum; ii++) {
    const int i = list->ilist[ii];
    const int *jlist = list->firstneigh[i];
    const int jnum = list->numneigh[i];
    for (int jj = 0; jj < jnum; jj++) {
      const int j = jlist[jj] & NEIGHMASK;
      const double d[3] = {x[j][0] - x[i][0], x[j][1] - x[i][1], x[j][2] - x[i][2]};
      if (d[0] * d[0] + d[1] * d[1] + d[2] * d[2] >= cutsq_model) continue;
      int node = j;
      if (j >= nlocal) {
        int &g = ghost_node[j - nlocal];
        if (g < 0) {
          g = nlocal + (int) ghost_atoms.size();
          ghost_atoms.push_back(j);
          ghost_types.push_back(map[type[j]]);
        }
        node = g;
      }
      src.push_back(i);
      dst.push_back(node);
      nbr.push_back(j);
      vec.insert(vec.end(), {(float) d[0], (float) d[1], (float) d[2]});
    }
  }
  const int64_t nedges = (int64_t) src.size();

  // a rank without atoms has nothing to evaluate but must take part in every exchange (ghost atoms of
  // other ranks may pass through it), with the same widths as the others
  if (nlocal == 0) {
    torch::Tensor unused;
    for (int k = 1; k < nl; k++)
      exchange_features(torch::zeros({0, boundary_dim[k - 1]}, kFloat), 0, nall, ghost_atoms, unused,
                        boundary_dim[k - 1]);
    for (int k = nl - 1; k >= 1; k--)
      exchange_gradients(torch::Tensor(), 0, nall, ghost_atoms, unused, boundary_dim[k - 1]);
    return;
  }

  std::string at = layer_paths[0];
  double energy = 0.0;
  torch::Tensor dEdr, atomic_energy;
  try {
    auto edge_vec = torch::from_blob(vec.data(), {nedges, 3}, kFloat).clone().to(device);
    edge_vec.set_requires_grad(true);
    const auto n_atoms = torch::full({1}, (int64_t) nlocal, kLong);

    c10::Dict<std::string, torch::Tensor> in;
    in.insert("x", long_tensor(local_types).to(device));
    in.insert("x_ghost", long_tensor(ghost_types).to(device));
    in.insert("edge_index", torch::stack({long_tensor(src), long_tensor(dst)}).to(device));
    in.insert("edge_vec", edge_vec);
    in.insert("num_atoms", n_atoms.to(device));
    in.insert("nlocal", n_atoms);    // SevenNet's layers split [local; ghost] with it, on the host

    // forward, layer by layer; what the backward pass needs of every boundary k (between layer k-1 and k):
    // the outputs of layer k-1 and the (detached) inputs of layer k
    std::vector<torch::Tensor> x_out(nl), sc_out(nl), x_in(nl), sc_in(nl), x_gh(nl);
    auto out = layers[0].forward({in}).toGenericDict();
    for (int k = 1; k < nl; k++) {
      at = layer_paths[k];
      x_out[k] = out.at("x").toTensor();
      sc_out[k] = out.at("self_cont_tmp").toTensor();
      const int dim = boundary_dim[k - 1];
      if (x_out[k].dim() != 2 || x_out[k].size(0) != nlocal || x_out[k].size(1) != dim)
        throw std::runtime_error(fmt::format("{} gave node features of shape {} where [{}, {}] was expected",
                                             layer_paths[k - 1], c10::str(x_out[k].sizes()), nlocal, dim));
      x_in[k] = x_out[k].detach().requires_grad_(true);
      sc_in[k] = sc_out[k].detach().requires_grad_(true);
      torch::Tensor xg;
      exchange_features(x_out[k].detach(), nlocal, nall, ghost_atoms, xg, dim);
      x_gh[k] = xg.to(device).requires_grad_(true);
      out.insert_or_assign("x", x_in[k]);
      out.insert_or_assign("self_cont_tmp", sc_in[k]);
      out.insert_or_assign("x_ghost", x_gh[k]);
      out.insert_or_assign("edge_vec", edge_vec);
      out = layers[k].forward({out}).toGenericDict();
    }
    at = layer_paths[nl - 1];
    const auto e_total = out.at("inferred_total_energy").toTensor().squeeze();
    atomic_energy = out.at("atomic_energy").toTensor().detach().reshape({-1}).to(torch::kCPU);

    // backward, last layer first
    dEdr = torch::zeros({nedges, 3}, kFloat.device(device));
    std::vector<torch::Tensor> of = {e_total}, grad_of;
    for (int k = nl - 1; k >= 0; k--) {
      at = layer_paths[k];
      std::vector<torch::Tensor> wrt = {edge_vec};
      if (k > 0) wrt.insert(wrt.end(), {x_in[k], sc_in[k], x_gh[k]});
      const auto grads = torch::autograd::grad(of, wrt, grad_of, /*retain_graph=*/false,
                                               /*create_graph=*/false, /*allow_unused=*/true);
      if (grads[0].defined()) dEdr += grads[0];
      if (k == 0) break;
      torch::Tensor g_owned;    // gradients on ghost features, summed on their owners
      exchange_gradients(grads[3], nlocal, nall, ghost_atoms, g_owned, boundary_dim[k - 1]);
      torch::Tensor g_x = g_owned.to(device);
      if (grads[1].defined()) g_x = g_x + grads[1];
      const torch::Tensor g_sc = grads[2].defined() ? grads[2] : torch::zeros_like(sc_out[k]);
      of = {x_out[k], sc_out[k]};
      grad_of = {g_x, g_sc};
    }
    dEdr = dEdr.to(torch::kCPU).contiguous();
    energy = e_total.item<double>();
  } catch (const c10::Error &e) {
    error->one(FLERR, "pair_style e3gnn/parallel: evaluation of {} failed on rank {}: {}", at, comm->me,
               e.what_without_backtrace());
  } catch (const std::exception &e) {
    error->one(FLERR, "pair_style e3gnn/parallel: evaluation of {} failed on rank {}: {}", at, comm->me,
               e.what());
  }

  // forces: edge_vec = x_j - x_i, so dE/dx_j = dE/dr and dE/dx_i = -dE/dr; ghost forces go to their
  // owners through LAMMPS's reverse communication of f (newton on)
  const float *g = dEdr.data_ptr<float>();
  for (int64_t e = 0; e < nedges; e++) {
    const int i = (int) src[e];
    const int j = nbr[e];
    const float *ge = g + 3 * e;
    for (int d = 0; d < 3; d++) {
      f[i][d] += ge[d];
      f[j][d] -= ge[d];
    }
    if (vflag_either) {
      const float *r = vec.data() + 3 * e;
      // -r (x) dE/dr, in LAMMPS order xx yy zz xy xz yz (the components SevenNet's serial style uses)
      const double v[6] = {-(double) r[0] * ge[0], -(double) r[1] * ge[1], -(double) r[2] * ge[2],
                           -(double) r[0] * ge[1], -(double) r[2] * ge[0], -(double) r[1] * ge[2]};
      if (vflag_global)
        for (int c = 0; c < 6; c++) virial[c] += v[c];
      if (vflag_atom)    // on the neighbour, as the serial style does; ghost rows are summed by LAMMPS
        for (int c = 0; c < 6; c++) vatom[j][c] += v[c];
    }
  }
  if (eflag_global) eng_vdwl += energy;
  if (eflag_atom) {
    const float *ae = atomic_energy.data_ptr<float>();
    for (int i = 0; i < nlocal; i++) eatom[i] += ae[i];
  }
}
