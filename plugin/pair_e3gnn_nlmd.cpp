/* pair_style e3gnn, nlmd's own serial SevenNet pair style: see pair_e3gnn_nlmd.h and docs/performance.md. */
#include "pair_e3gnn_nlmd.h"

#include "atom.h"
#include "comm.h"
#include "error.h"
#include "force.h"
#include "memory.h"
#include "model_metadata.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "platform.h"
#include "utils.h"

#include <ATen/Parallel.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/torch.h>

#include <sched.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

using namespace LAMMPS_NS;

// defined in SevenNet's pair_e3gnn_oeq_autograd.cpp (compiled into the same plugin for e3gnn/parallel)
extern void pair_e3gnn_oeq_register_autograd();

namespace {

const auto kLong = torch::TensorOptions().dtype(torch::kInt64);
const auto kFloat = torch::TensorOptions().dtype(torch::kFloat32);

// a positive integer from an environment variable ("4", or the first entry of OpenMP's "4,2"), else 0
int env_threads(const char *name)
{
  const char *v = std::getenv(name);
  if (!v || !*v) return 0;
  char *end = nullptr;
  const long n = std::strtol(v, &end, 10);
  return (end != v && n > 0 && n < 100000) ? (int) n : 0;
}

// CPUs this process may run on (its affinity mask), at least 1
int cpus_of_process()
{
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return 1;
}

// the 1-minute load average (runnable tasks), or -1 when unknown
double load_average()
{
  double l[1];
  return getloadavg(l, 1) == 1 ? l[0] : -1.0;
}

}    // namespace

PairE3GNNnlmd::PairE3GNNnlmd(LAMMPS *lmp) : PairE3GNNBase(lmp), device(torch::kCPU) {}



void PairE3GNNnlmd::require_single_rank()
{
  // the graph holds local atoms only (ghosts folded onto their owners by tag): on several ranks every edge
  // that crosses a subdomain would be lost
  if (comm->nprocs > 1)
    error->all(FLERR,
               "pair_style e3gnn runs on one MPI rank only and this run has {} ranks: use "
               "pair_style e3gnn/parallel with a parallel deployment (nlmd deploy writes deployed_parallel/; "
               "pair_coeff * * <num_layers> <deployed_parallel dir> <elements>)",
               comm->nprocs);
}

void PairE3GNNnlmd::settings(int narg, char **arg)
{
  require_single_rank();
  threads_keyword = 0;
  int iarg = 0;
  while (iarg < narg) {
    if (strcmp(arg[iarg], "threads") == 0 && iarg + 1 < narg) {
      threads_keyword = utils::inumeric(FLERR, arg[iarg + 1], false, lmp);
      if (threads_keyword < 1) error->all(FLERR, "pair_style e3gnn threads: expected a number >= 1");
      iarg += 2;
    } else {
      error->all(FLERR,
                 "Illegal pair_style e3gnn argument '{}': expected `pair_style e3gnn` or `pair_style e3gnn "
                 "threads <N>` (the model is given by pair_coeff * * <deployed_serial.pt> <elements>)",
                 arg[iarg]);
    }
  }
}

/* torch's intra-op threads. Inside LAMMPS, libtorch's OpenMP calls resolve to the OpenMP runtime LAMMPS
   loaded first, which LAMMPS sets to one thread when OMP_NUM_THREADS is unset; torch would then run the
   model on one core. Take the count from, in order: `pair_style e3gnn threads N`, NLMD_TORCH_THREADS,
   OMP_NUM_THREADS, and else every CPU of this process (one rank: no other rank shares them) - unless the
   machine is already busy (load average >= CPUs when the model is loaded): then one thread, because an
   OpenMP team on oversubscribed cores waits at every operator for a descheduled thread (measured on a
   shared 2-core machine: SevenNet-0 on 2 threads 3x slower than on 1; see docs/performance.md). */
void PairE3GNNnlmd::choose_threads()
{
  int n;
  if (threads_keyword > 0) {
    n = threads_keyword;
    threads_origin = "pair_style keyword threads";
  } else if ((n = env_threads("NLMD_TORCH_THREADS")) > 0) {
    threads_origin = "NLMD_TORCH_THREADS";
  } else if ((n = env_threads("OMP_NUM_THREADS")) > 0) {
    threads_origin = "OMP_NUM_THREADS";
  } else {
    const int cpus = cpus_of_process();
    const double load = load_average();
    if (cpus > 1 && load >= cpus) {
      n = 1;
      threads_origin = fmt::format("the machine is busy, load average {:.1f} on {} CPUs; set NLMD_TORCH_THREADS "
                                   "or `pair_style e3gnn threads N` to choose", load, cpus);
    } else {
      n = cpus;
      threads_origin = "all CPUs of the process; set NLMD_TORCH_THREADS or `pair_style e3gnn threads N` to choose";
    }
  }
  nthreads = n;
}

void PairE3GNNnlmd::apply_threads()
{
  if (at::get_num_threads() != nthreads) at::set_num_threads(nthreads);
}

void PairE3GNNnlmd::load_model(const std::string &path, bool oeq)
{
  if (!aoti && torch::cuda::is_available()) device = torch::Device(torch::kCUDA);    // a package keeps its own
  try {
    model = torch::jit::load(path, device);
    model.eval();
  } catch (const c10::Error &e) {
    error->all(FLERR, "pair_style e3gnn cannot load {}: {}", path, e.what_without_backtrace());
  } catch (const std::exception &e) {
    error->all(FLERR, "pair_style e3gnn cannot load {}: {}", path, e.what());
  }
  if (oeq) pair_e3gnn_oeq_register_autograd();    // so that autograd::grad works through its kernels
  // The graph changes size at every step: the profiling executor would re-specialise and re-optimise for
  // new shapes (seconds each time). Run the model as scripted, like SevenNet's own styles do. The setting
  // is process-wide, and e3gnn/parallel sets the same.
  torch::jit::setGraphExecutorOptimize(false);
  loaded = true;
}

/* An AOTInductor package runs on the device it was compiled for: the CPU code Inductor generated cannot
   run on a GPU (nor CUDA code on a CPU-only node). */
void PairE3GNNnlmd::load_package(const std::string &path)
{
  try {
    aoti = std::make_unique<torch::inductor::AOTIModelPackageLoader>(path, "model");
  } catch (const c10::Error &e) {
    error->all(FLERR, "pair_style e3gnn cannot load {}: {}", path, e.what_without_backtrace());
  } catch (const std::exception &e) {
    error->all(FLERR, "pair_style e3gnn cannot load {}: {}", path, e.what());
  }
}

void PairE3GNNnlmd::evaluate(const torch::Tensor &species, const torch::Tensor &edge_index,
                             const torch::Tensor &edge_vec, int64_t natoms, bool want_atomic,
                             torch::Tensor &energy, torch::Tensor &atomic_energy, torch::Tensor &dedr)
{
  const int64_t ne = edge_vec.size(0);
  if (aoti && natoms >= 2 && ne >= 2) {
    auto out = aoti->run({species.to(device), edge_index.to(device), edge_vec.to(device)});
    energy = out[0].to(torch::kCPU).reshape({});
    if (want_atomic) atomic_energy = out[1].to(torch::kCPU).reshape({natoms});
    dedr = out[2].to(torch::kCPU).contiguous();
    return;
  }
  if (!loaded) {    // a package, and a graph too small for it: the TorchScript file it names
    if (fallback_path.empty())
      error->one(FLERR, "pair_style e3gnn: {} is compiled for at least 2 atoms and 2 edges, this graph has {} "
                 "and {}, and the TorchScript file for such graphs is missing", model_path, natoms, ne);
    load_model(fallback_path, false);
  }
  auto ev = device.is_cpu() ? edge_vec.detach().requires_grad_(true) : edge_vec.to(device).requires_grad_(true);
  auto out = run_model(species, edge_index, ev, natoms).toGenericDict();
  auto e = out.at("inferred_total_energy").toTensor().squeeze();
  if (want_atomic) atomic_energy = out.at("atomic_energy").toTensor().detach().to(torch::kCPU).reshape({natoms});
  dedr = torch::autograd::grad({e}, {ev})[0].to(torch::kCPU).contiguous();
  energy = e.detach().to(torch::kCPU);
}

torch::IValue PairE3GNNnlmd::run_model(const torch::Tensor &species, const torch::Tensor &edge_index,
                                       const torch::Tensor &edge_vec, int64_t natoms)
{
  auto num_atoms = torch::full({1}, natoms, kLong);
  torch::Dict<std::string, torch::Tensor> in;
  in.insert("x", species.to(device));
  in.insert("edge_index", edge_index.to(device));
  in.insert("edge_vec", edge_vec);
  in.insert("num_atoms", num_atoms.to(device));
  in.insert("nlocal", num_atoms);
  std::vector<torch::IValue> args{in};
  return model.forward(args);
}

/* The first calls of a TorchScript module build its execution plan and the autograd graph functions, and
   the first kernels allocate their workspaces: on SevenNet-0 the first MD steps were many times slower than
   the following ones. Do that work here, at load time, on a small graph of the pair_coeff species. */
void PairE3GNNnlmd::warm_up()
{
  std::vector<int64_t> sp;
  for (int t = 1; t <= atom->ntypes; ++t) sp.push_back(map[t]);
  while (sp.size() < 4) sp.push_back(sp[sp.size() % std::max<size_t>(1, atom->ntypes)]);
  const int64_t n = (int64_t) sp.size();
  std::vector<int64_t> src, dst;
  std::vector<float> vec;
  const float r = (float) (0.45 * cutoff);
  for (int64_t a = 0; a < n; ++a)
    for (int64_t b = 0; b < n; ++b) {
      if (a == b) continue;
      src.push_back(a);
      dst.push_back(b);
      vec.push_back(r * (float) (1 + (a + b) % 2));
      vec.push_back(0.1f * (float) (b - a));
      vec.push_back(0.05f * (float) (a * b));
    }
  const int64_t ne = (int64_t) src.size();
  auto species = torch::from_blob(sp.data(), {n}, kLong);
  auto edge_index = torch::stack({torch::from_blob(src.data(), {ne}, kLong), torch::from_blob(dst.data(), {ne}, kLong)});
  try {
    for (int k = 0; k < 3; ++k) {
      auto ev = torch::from_blob(vec.data(), {ne, 3}, kFloat);
      torch::Tensor e, ea, g;
      evaluate(species, edge_index, ev, n, true, e, ea, g);
    }
  } catch (const c10::Error &e) {
    error->all(FLERR, "pair_style e3gnn: {} fails on a test graph: {}", model_path, e.what_without_backtrace());
  } catch (const std::exception &e) {
    error->all(FLERR, "pair_style e3gnn: {} fails on a test graph: {}", model_path, e.what());
  }
}

void PairE3GNNnlmd::coeff(int narg, char **arg)
{
  require_single_rank();
  if (allocated) error->all(FLERR, "pair_coeff e3gnn was given twice: give it once, as pair_coeff * * ...");
  nlmd::ModelMetadata meta;
  std::vector<std::string> elements;
  const std::string bad = nlmd::parse_serial_coeff(narg, arg, atom->ntypes, "e3gnn", meta, elements);
  if (!bad.empty()) error->all(FLERR, bad);
  const std::string path = arg[2];
  const std::string dtype = meta.get("dtype", "single");
  if (dtype != "single" && dtype != "float32")
    error->all(FLERR, "pair_style e3gnn: {} is a '{}' precision model; e3gnn runs single precision models",
               path, dtype);

  allocate();
  for (size_t t = 0; t < elements.size(); ++t)
    for (size_t s = 0; s < meta.species.size(); ++s)
      if (meta.species[s] == elements[t]) map[t + 1] = (int) s;
  cutoff = meta.cutoff;
  cutoff_sq = cutoff * cutoff;
  for (int i = 1; i <= atom->ntypes; i++)
    for (int j = 1; j <= atom->ntypes; j++) {
      setflag[i][j] = 1;
      cutsq[i][j] = cutoff_sq;
    }

  choose_threads();
  apply_threads();
  model_path = path;
  const double t0 = platform::walltime();
  std::string kind = "TorchScript";
  if (nlmd::is_aoti_package(path)) {
    const std::string dev = meta.get("device", "cpu");
    if (dev != "cpu" && !(dev == "cuda" && torch::cuda::is_available()))
      error->all(FLERR, "pair_style e3gnn: {} is compiled for device '{}', which this process does not have; "
                 "deploy again on this kind of node (nlmd deploy --aot)", path, dev);
    device = dev == "cuda" ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
    const std::string ts = meta.get("torchscript", "");
    fallback_path.clear();
    if (!ts.empty()) {
      const std::string dir = platform::path_dirname(path);
      fallback_path = dir.empty() || dir == "." ? ts : platform::path_join(dir, ts);
      if (!platform::file_is_readable(fallback_path)) fallback_path.clear();
    }
    load_package(path);
    kind = fmt::format("AOTInductor package for {} ({}), TorchScript fallback {}", meta.get("AOTI_CPU_ISA", dev),
                       dev, fallback_path.empty() ? "none" : fallback_path);
  } else {
    load_model(path, meta.get("oeq", "no") == "yes");
  }
  const double t1 = platform::walltime();
  warm_up();
  const double t2 = platform::walltime();

  std::string types;
  for (size_t i = 0; i < elements.size(); ++i) types += fmt::format(" {}={}", i + 1, elements[i]);
  if (comm->me == 0)
    utils::logmesg(lmp,
                   "e3gnn: model {} (SevenNet {}, {} precision, cutoff {} A, {} species, deployed {}); "
                   "types:{}\n"
                   "e3gnn: {} on {}, {}, {} torch thread(s) ({}); loaded in {:.2f} s, warmed up in {:.2f} s\n",
                   path, meta.get("version"), meta.get("dtype"), meta.cutoff, meta.species.size(),
                   meta.get("time"), types, "nlmd pair style", device.is_cuda() ? "CUDA" : "CPU", kind, nthreads,
                   threads_origin, t1 - t0, t2 - t1);
}

void PairE3GNNnlmd::init_style()
{
  require_single_rank();
  neighbor->add_request(this, NeighConst::REQ_FULL);
}

double PairE3GNNnlmd::init_one(int, int)
{
  return cutoff;
}

void PairE3GNNnlmd::compute(int eflag, int vflag)
{
  ev_init(eflag, vflag);
  if (!loaded && !aoti) error->all(FLERR, "pair_style e3gnn: no model loaded (pair_coeff missing)");
  apply_threads();

  double **x = atom->x;
  double **f = atom->f;
  const int *type = atom->type;
  const tagint *tag = atom->tag;
  const int nall = atom->nlocal + atom->nghost;
  const int inum = list->inum;
  const int *ilist = list->ilist;
  const int *numneigh = list->numneigh;
  int **firstneigh = list->firstneigh;

  // graph nodes: the atoms of the neighbour list, in its order; tag -> node index for folding ghosts
  tagint maxtag = 0;
  for (int k = 0; k < nall; ++k) maxtag = std::max(maxtag, tag[k]);
  local_of_tag.assign((size_t) maxtag + 1, -1);
  node_species.resize(inum);
  for (int ii = 0; ii < inum; ++ii) {
    const int i = ilist[ii];
    local_of_tag[tag[i]] = ii;
    node_species[ii] = map[type[i]];
  }

  edge_src.clear();
  edge_dst.clear();
  edge_vec.clear();
  for (int ii = 0; ii < inum; ++ii) {
    const int i = ilist[ii];
    const double xi = x[i][0], yi = x[i][1], zi = x[i][2];
    const int *jlist = firstneigh[i];
    const int jnum = numneigh[i];
    for (int jj = 0; jj < jnum; ++jj) {
      const int j = jlist[jj] & NEIGHMASK;
      const double dx = x[j][0] - xi, dy = x[j][1] - yi, dz = x[j][2] - zi;
      if (dx * dx + dy * dy + dz * dz >= cutoff_sq) continue;
      const int node_j = local_of_tag[tag[j]];
      if (node_j < 0) continue;    // not an atom of the list (neigh_modify include)
      edge_src.push_back(ii);
      edge_dst.push_back(node_j);
      edge_vec.push_back((float) dx);
      edge_vec.push_back((float) dy);
      edge_vec.push_back((float) dz);
    }
  }
  const int64_t ne = (int64_t) edge_src.size();

  auto species = torch::from_blob(node_species.data(), {inum}, kLong);
  auto edge_index = torch::empty({2, ne}, kLong);
  if (ne) {
    std::memcpy(edge_index.data_ptr<int64_t>(), edge_src.data(), ne * sizeof(int64_t));
    std::memcpy(edge_index.data_ptr<int64_t>() + ne, edge_dst.data(), ne * sizeof(int64_t));
  }
  auto ev = torch::from_blob(edge_vec.data(), {ne, 3}, kFloat);

  torch::Tensor energy, dedr, atomic_energy;
  try {
    evaluate(species, edge_index, ev, inum, eflag_atom, energy, atomic_energy, dedr);
  } catch (const c10::Error &e) {
    error->one(FLERR, "pair_style e3gnn: the model {} failed on {} atoms and {} edges: {}", model_path, inum,
               ne, e.what_without_backtrace());
  } catch (const std::exception &e) {
    error->one(FLERR, "pair_style e3gnn: the model {} failed on {} atoms and {} edges: {}", model_path, inum,
               ne, e.what());
  }

  if (eflag_global) eng_vdwl += energy.item<double>();

  // F_src += dE/dr, F_dst -= dE/dr (r = x_dst - x_src); virial W_ab = -sum_edges r_a dE/dr_b, per atom on dst
  const float *g = dedr.data_ptr<float>();
  const float *r = edge_vec.data();
  double v[6] = {0, 0, 0, 0, 0, 0};
  for (int64_t e = 0; e < ne; ++e) {
    const double gx = g[3 * e], gy = g[3 * e + 1], gz = g[3 * e + 2];
    const int i = ilist[edge_src[e]], j = ilist[edge_dst[e]];
    f[i][0] += gx;
    f[i][1] += gy;
    f[i][2] += gz;
    f[j][0] -= gx;
    f[j][1] -= gy;
    f[j][2] -= gz;
    if (vflag_either) {
      const double rx = r[3 * e], ry = r[3 * e + 1], rz = r[3 * e + 2];
      const double w[6] = {-rx * gx, -ry * gy, -rz * gz, -rx * gy, -rz * gx, -ry * gz};
      for (int k = 0; k < 6; ++k) v[k] += w[k];
      if (vflag_atom)
        for (int k = 0; k < 6; ++k) vatom[j][k] += w[k];
    }
  }
  if (vflag_global)
    for (int k = 0; k < 6; ++k) virial[k] += v[k];

  if (eflag_atom) {
    const float *ea = atomic_energy.data_ptr<float>();
    for (int ii = 0; ii < inum; ++ii) eatom[ilist[ii]] += ea[ii];
  }
}
