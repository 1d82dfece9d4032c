/* pair_style e3gnn/parallel (nlmd's own implementation; see pair_e3gnn_parallel.h, layered_model.h for how
   SevenNet's parallel deployment is cut and evaluated, and docs/parallel.md).

   Between two layers the local features go into a per-atom host buffer, Comm::forward_comm fills the ghost
   rows from their owners, and the ghost rows of the graph become the next layer's ghost features; in the
   backward pass the gradients on ghost features go into the ghost rows and Comm::reverse_comm sums them into
   the owners. Forces follow from dE/d(edge_vec) on local and ghost atoms (LAMMPS sums ghost forces into their
   owners, newton on), the virial from -sum(edge_vec x dE/d(edge_vec)) (PairE3GNNBase::tally). */
#include "pair_e3gnn_parallel.h"

#include "atom.h"
#include "comm.h"
#include "force.h"
#include "neighbor.h"
#include "update.h"
#include "utils.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

using namespace LAMMPS_NS;

namespace {

std::string layer_file(const std::string &dir, int k)
{
  return (std::filesystem::path(dir) / ("deployed_parallel_" + std::to_string(k) + ".pt")).string();
}

// the compiled layers nlmd deploy writes beside them (python/nlmd/aot_layers.py): layer_<k>_forward.pt2 and
// layer_<k>_gradient.pt2 for every layer but the last, layer_<last>.pt2
std::string package_file(const std::string &dir, int k, const char *kind)
{
  return (std::filesystem::path(dir) / ("layer_" + std::to_string(k) + kind + ".pt2")).string();
}

// number of deployed_parallel_<k>.pt files with consecutive k from 0 in a directory
int count_layer_files(const std::string &dir)
{
  int n = 0;
  while (std::filesystem::is_regular_file(layer_file(dir, n))) ++n;
  return n;
}

}    // namespace

PairE3GNNParallel::PairE3GNNParallel(LAMMPS *lmp) : PairE3GNNBase(lmp, "e3gnn/parallel")
{
  comm_forward = 0;
  comm_reverse = 0;
}

void PairE3GNNParallel::settings(int narg, char **arg)
{
  use_packages = true;
  if (narg == 1 && strcmp(arg[0], "torchscript") == 0)
    use_packages = false;
  else if (narg != 0)
    error->all(FLERR, "pair_style e3gnn/parallel takes no argument but the optional keyword `torchscript` (run "
                      "the TorchScript layers even where compiled ones exist); the model is given by pair_coeff * * "
                      "<num_layers> <deployed_parallel dir> <elements>");
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

  const std::string types = set_types(meta, elements);

  // the comm buffers are sized from these when the run is set up (Comm::init), so set them here
  comm_forward = comm_size;
  comm_reverse = comm_size;

  std::string device_name;
  const nlmd::Device device = select_device(device_name);
  call_model(true,
             [&](const std::string &file) { return fmt::format("pair_style e3gnn/parallel cannot load {}", file); },
             [&] { model.load(paths, device, meta.get("oeq", "no") == "yes"); });
  // the compiled layers, when the directory has them for every layer (and the input did not opt out)
  std::vector<std::string> forward, gradient;
  if (use_packages && std::filesystem::is_directory(where)) {
    for (int k = 0; k < nlayers; k++) {
      const bool last = k == nlayers - 1;
      forward.push_back(package_file(where, k, last ? "" : "_forward"));
      if (!last) gradient.push_back(package_file(where, k, "_gradient"));
    }
    bool all = true;
    for (const auto &p : forward) all = all && std::filesystem::is_regular_file(p);
    for (const auto &p : gradient) all = all && std::filesystem::is_regular_file(p);
    if (!all) forward.clear(), gradient.clear();
  }
  std::string kind = "TorchScript";
  if (!forward.empty()) {
    nlmd::ModelMetadata pm;
    try {
      pm = nlmd::read_model_metadata(forward[0]);
    } catch (const std::exception &e) {
      error->all(FLERR, "pair_style e3gnn/parallel cannot use the compiled layers: {}", e.what());
    }
    if (pm.get("nlmd_format", "") != nlmd::kAotiLayerFormat)
      error->all(FLERR, "pair_style e3gnn/parallel: {} has nlmd_format '{}', expected '{}'", forward[0],
                 pm.get("nlmd_format", ""), nlmd::kAotiLayerFormat);
    if (pm.cutoff != meta.cutoff || pm.species != meta.species)
      error->all(FLERR,
                 "pair_style e3gnn/parallel: {} and {} disagree on cutoff or species: the compiled layers are not "
                 "those of this deployment; deploy again (nlmd deploy), or use `pair_style e3gnn/parallel "
                 "torchscript`",
                 forward[0], meta.path);
    const std::string dev = pm.get("device", "cpu");
    if (dev != (device.is_cuda() ? "cuda" : "cpu"))
      error->all(FLERR,
                 "pair_style e3gnn/parallel: the compiled layers in {} are for device '{}' but this run uses the {}; "
                 "deploy again on this kind of node (nlmd deploy), or use `pair_style e3gnn/parallel torchscript`",
                 where, dev, device_name);
    call_model(true,
               [&](const std::string &file) { return fmt::format("pair_style e3gnn/parallel cannot load {}", file); },
               [&] { model.load_packages(forward, gradient); });
    kind = fmt::format("AOTInductor packages for {} ({})", pm.get("AOTI_CPU_ISA", dev), dev);
  }

  // every rank probes the same, so a failure is reported by all of them
  call_model(true,
             [&](const std::string &file) {
               return fmt::format("pair_style e3gnn/parallel: test evaluation of {} failed", file);
             },
             [&] { model.probe(cutoff, comm_size); });

  if (comm->me == 0) {
    utils::logmesg(lmp,
                   "e3gnn/parallel: {} layer(s) from {} (SevenNet {}, {} precision, cutoff {} A, comm_size {}, "
                   "{} species, deployed {}); features per layer boundary: {}; device {}; layers run as {}; "
                   "types:{}\n",
                   nlayers, where, meta.get("version"), meta.get("dtype"), cutoff, comm_size, meta.species.size(),
                   meta.get("time"), model_description(), device_name, kind, types);
  }
}

std::string PairE3GNNParallel::model_description() const
{
  std::string s;
  const auto &dims = model.boundary_dims();
  for (size_t k = 0; k < dims.size(); ++k) s += (k ? " " : "") + std::to_string(dims[k]);
  return s.empty() ? "none (one layer)" : s;
}

void PairE3GNNParallel::init_style()
{
  if (model.num_layers() == 0) error->all(FLERR, "pair_style e3gnn/parallel: pair_coeff has not loaded a model");
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

/* ---------------------------------------------------------------------------------------------------------
   feature exchange
------------------------------------------------------------------------------------------------------------ */

void PairE3GNNParallel::Exchange::forward(const float *centres, int dim, float *ghosts)
{
  const int nlocal = pair->atom->nlocal;
  auto &buf = pair->comm_buf;
  pair->comm_dim = dim;
  buf.resize((size_t) (nlocal + pair->atom->nghost) * dim);
  std::copy(centres, centres + (size_t) nlocal * dim, buf.begin());
  pair->comm->forward_comm(pair, dim);
  const size_t ng = pair->node_atom.size() - nlocal;
  for (size_t k = 0; k < ng; k++) {
    const double *row = buf.data() + (size_t) pair->node_atom[nlocal + k] * dim;
    for (int d = 0; d < dim; d++) ghosts[k * dim + d] = (float) row[d];
  }
}

void PairE3GNNParallel::Exchange::reverse(const float *ghosts, int dim, float *centres)
{
  const int nlocal = pair->atom->nlocal;
  auto &buf = pair->comm_buf;
  pair->comm_dim = dim;
  buf.assign((size_t) (nlocal + pair->atom->nghost) * dim, 0.0);
  const size_t ng = pair->node_atom.size() - nlocal;
  if (ghosts)
    for (size_t k = 0; k < ng; k++) {
      double *row = buf.data() + (size_t) pair->node_atom[nlocal + k] * dim;
      for (int d = 0; d < dim; d++) row[d] = ghosts[k * dim + d];
    }
  pair->comm->reverse_comm(pair, dim);
  for (size_t m = 0; m < (size_t) nlocal * dim; m++) centres[m] = (float) buf[m];
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
  build_graph(GHOST_NODES);
  call_model(false,
             [&](const std::string &file) {
               return fmt::format("pair_style e3gnn/parallel: evaluation of {} failed on rank {}", file, comm->me);
             },
             [&] { model.evaluate(graph, eflag_atom, exchange, result); });
  tally();
}
