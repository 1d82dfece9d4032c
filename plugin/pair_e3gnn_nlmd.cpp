/* pair_style e3gnn, nlmd's own serial SevenNet pair style: see pair_e3gnn_nlmd.h and docs/performance.md. */
#include "pair_e3gnn_nlmd.h"

#include "atom.h"
#include "comm.h"
#include "error.h"
#include "neighbor.h"
#include "platform.h"
#include "utils.h"

#include <sched.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

using namespace LAMMPS_NS;

namespace {

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

PairE3GNNnlmd::PairE3GNNnlmd(LAMMPS *lmp) : PairE3GNNBase(lmp, "e3gnn") {}

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

/* The device: a TorchScript file runs on the GPU when there is one; an AOTInductor package on the device it
   was compiled for (the CPU code Inductor generated cannot run on a GPU, nor CUDA code on a CPU-only node),
   with the TorchScript file its metadata names for graphs too small for it. `kind` says what was loaded. */
void PairE3GNNnlmd::load(const std::string &path, const nlmd::ModelMetadata &meta, std::string &kind)
{
  std::string where;
  const nlmd::Device gpu = select_device(where);
  if (!nlmd::is_aoti_package(path)) {
    kind = "TorchScript";
    call_model(true, [&](const std::string &file) { return fmt::format("pair_style e3gnn cannot load {}", file); },
               [&] { model.load_torchscript(path, gpu, meta.get("oeq", "no") == "yes"); });
    return;
  }
  const std::string dev = meta.get("device", "cpu");
  if (dev != "cpu" && !(dev == "cuda" && gpu.is_cuda()))
    error->all(FLERR, "pair_style e3gnn: {} is compiled for device '{}', which this process does not have; "
               "deploy again on this kind of node (nlmd deploy --aot)", path, dev);
  const std::string ts = meta.get("torchscript", "");
  std::string fallback;
  if (!ts.empty()) {
    const std::string dir = platform::path_dirname(path);
    fallback = dir.empty() || dir == "." ? ts : platform::path_join(dir, ts);
    if (!platform::file_is_readable(fallback)) fallback.clear();
  }
  call_model(true, [&](const std::string &file) { return fmt::format("pair_style e3gnn cannot load {}", file); },
             [&] { model.load_package(path, dev == "cuda" ? gpu : nlmd::Device{}, fallback); });
  kind = fmt::format("AOTInductor package for {} ({}), TorchScript fallback {}", meta.get("AOTI_CPU_ISA", dev), dev,
                     fallback.empty() ? "none" : fallback);
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
  const std::string types = set_types(meta, elements);

  choose_threads();
  nlmd::set_torch_threads(nthreads);
  const double t0 = platform::walltime();
  std::string kind;
  load(path, meta, kind);
  const double t1 = platform::walltime();
  call_model(true, [&](const std::string &) { return fmt::format("pair_style e3gnn: {} fails on a test graph", path); },
             [&] { model.warm_up(type_species(), cutoff); });
  const double t2 = platform::walltime();

  if (comm->me == 0)
    utils::logmesg(lmp,
                   "e3gnn: model {} (SevenNet {}, {} precision, cutoff {} A, {} species, deployed {}); "
                   "types:{}\n"
                   "e3gnn: {} on {}, {}, {} torch thread(s) ({}); loaded in {:.2f} s, warmed up in {:.2f} s\n",
                   path, meta.get("version"), meta.get("dtype"), meta.cutoff, meta.species.size(),
                   meta.get("time"), types, "nlmd pair style", model.device().is_cuda() ? "CUDA" : "CPU", kind,
                   nthreads, threads_origin, t1 - t0, t2 - t1);
}

void PairE3GNNnlmd::init_style()
{
  require_single_rank();
  neighbor->add_request(this, NeighConst::REQ_FULL);
}

void PairE3GNNnlmd::compute(int eflag, int vflag)
{
  ev_init(eflag, vflag);
  if (!model.loaded()) error->all(FLERR, "pair_style e3gnn: no model loaded (pair_coeff missing)");
  nlmd::set_torch_threads(nthreads);
  build_graph(FOLD_GHOSTS);
  call_model(false,
             [&](const std::string &) {
               return fmt::format("pair_style e3gnn: the model {} failed on {} atoms and {} edges", model.path(),
                                  graph.nlocal, graph.num_edges());
             },
             [&] { model.evaluate(graph, eflag_atom, result); });
  tally();
}
