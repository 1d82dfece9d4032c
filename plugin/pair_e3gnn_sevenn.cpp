#include "pair_e3gnn_sevenn.h"

#include "atom.h"
#include "comm.h"
#include "error.h"
#include "model_metadata.h"
#include "utils.h"

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

using namespace LAMMPS_NS;

PairE3GNNSevenn::PairE3GNNSevenn(LAMMPS *lmp) : PairE3GNN(lmp) {}

void PairE3GNNSevenn::require_single_rank()
{
  // SevenNet's serial style builds its graph from local atoms only (ghosts mapped back by tag), so on
  // several ranks it would drop every edge that crosses a subdomain; it also writes to the log file,
  // which is NULL on ranks > 0, and dies there without a message.
  if (comm->nprocs > 1)
    error->all(FLERR,
               "pair_style e3gnn/sevenn runs on one MPI rank only and this run has {} ranks: use "
               "pair_style e3gnn/parallel with a parallel deployment (nlmd deploy writes deployed_parallel/; "
               "pair_coeff * * <num_layers> <deployed_parallel dir> <elements>)",
               comm->nprocs);
}

void PairE3GNNSevenn::coeff(int narg, char **arg)
{
  require_single_rank();
  nlmd::ModelMetadata meta;
  std::vector<std::string> elements;
  const std::string bad = nlmd::parse_serial_coeff(narg, arg, atom->ntypes, "e3gnn/sevenn", meta, elements);
  if (!bad.empty()) error->all(FLERR, bad);
  const std::string path = arg[2];

  // SevenNet's coeff() writes to lmp->logfile without checking it: give it a sink under `-log none`.
  FILE *saved = lmp->logfile;
  FILE *sink = nullptr;
  if (!saved) lmp->logfile = sink = fopen("/dev/null", "w");
  try {
    PairE3GNN::coeff(narg, arg);
  } catch (...) {
    lmp->logfile = saved;
    if (sink) fclose(sink);
    throw;
  }
  lmp->logfile = saved;
  if (sink) fclose(sink);

  std::string types;
  for (size_t i = 0; i < elements.size(); ++i) types += fmt::format(" {}={}", i + 1, elements[i]);
  if (comm->me == 0)
    utils::logmesg(lmp,
                   "e3gnn/sevenn: model {} (SevenNet {}, {} precision, cutoff {} A, {} species, deployed {}); "
                   "types:{}\n",
                   path, meta.get("version"), meta.get("dtype"), meta.cutoff, meta.species.size(),
                   meta.get("time"), types);
}

void PairE3GNNSevenn::init_style()
{
  require_single_rank();
  PairE3GNN::init_style();
}
