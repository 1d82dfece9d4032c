/* The LAMMPS side shared by nlmd's SevenNet pair styles: see pair_e3gnn_base.h. */
#include "pair_e3gnn_base.h"

#include "atom.h"
#include "comm.h"
#include "force.h"    // CENTROID_NOTAVAIL
#include "memory.h"
#include "neigh_list.h"

#include <algorithm>

using namespace LAMMPS_NS;

PairE3GNNBase::PairE3GNNBase(LAMMPS *lmp, const char *style_name) : Pair(lmp), style(style_name)
{
  single_enable = 0;
  restartinfo = 0;
  one_coeff = 1;
  manybody_flag = 1;
  no_virial_fdotr_compute = 1;    // the virial comes from the edge vectors, see tally()
  centroidstressflag = CENTROID_NOTAVAIL;
}

PairE3GNNBase::~PairE3GNNBase()
{
  if (allocated) {
    memory->destroy(setflag);
    memory->destroy(cutsq);
    memory->destroy(map);
  }
}

// setflag, cutsq and map (type -> model species index) for the current atom types, nothing set yet
void PairE3GNNBase::allocate()
{
  allocated = 1;
  const int n = atom->ntypes;
  memory->create(setflag, n + 1, n + 1, "pair:setflag");
  memory->create(cutsq, n + 1, n + 1, "pair:cutsq");
  memory->create(map, n + 1, "pair:map");
  for (int i = 0; i <= n; i++) {
    map[i] = -1;
    for (int j = 0; j <= n; j++) setflag[i][j] = 0;
  }
}

std::string PairE3GNNBase::set_types(const nlmd::ModelMetadata &meta, const std::vector<std::string> &elements)
{
  if (!allocated) allocate();
  std::string types;
  for (int t = 1; t <= atom->ntypes; t++) {
    const auto it = std::find(meta.species.begin(), meta.species.end(), elements[t - 1]);
    map[t] = (int) (it - meta.species.begin());
    types += fmt::format(" {}={}", t, elements[t - 1]);
  }
  cutoff = meta.cutoff;
  for (int i = 1; i <= atom->ntypes; i++)
    for (int j = 1; j <= atom->ntypes; j++) {
      setflag[i][j] = 1;
      cutsq[i][j] = cutoff * cutoff;
    }
  return types;
}

std::vector<int64_t> PairE3GNNBase::type_species() const
{
  std::vector<int64_t> species;
  for (int t = 1; t <= atom->ntypes; ++t) species.push_back(map[t]);
  return species;
}

double PairE3GNNBase::init_one(int i, int j)
{
  if (setflag[i][j] == 0) error->all(FLERR, "pair_style {}: pair_coeff * * was not given", style);
  return cutoff;    // ghost atoms to one model cutoff (plus the neighbor skin)
}

nlmd::Device PairE3GNNBase::select_device(std::string &description)
{
  // the exchange of e3gnn/parallel goes through host memory either way (the LAMMPS comm API packs double
  // buffers on the host)
  const int ndev = nlmd::cuda_device_count();
  if (ndev == 0) {
    description = "CPU";
    return {};
  }
  MPI_Comm node;
  MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, comm->me, MPI_INFO_NULL, &node);
  int node_rank = 0;
  MPI_Comm_rank(node, &node_rank);
  MPI_Comm_free(&node);
  description = fmt::format("CUDA:{} (rank {} is node-local rank {}; {} GPU(s) visible)", node_rank % ndev,
                            comm->me, node_rank, ndev);
  return {node_rank % ndev};
}

void PairE3GNNBase::build_graph(GhostPolicy policy)
{
  double **x = atom->x;
  const int *type = atom->type;
  const tagint *tag = atom->tag;
  const int nlocal = atom->nlocal;
  const int nall = nlocal + atom->nghost;
  const int inum = list->inum;
  const int *ilist = list->ilist;
  const int *numneigh = list->numneigh;
  int **firstneigh = list->firstneigh;
  const double cutoff_sq = cutoff * cutoff;

  if (policy == FOLD_GHOSTS) {
    tagint maxtag = 0;
    for (int k = 0; k < nall; ++k) maxtag = std::max(maxtag, tag[k]);
    local_of_tag.assign((size_t) maxtag + 1, -1);
    graph.clear(inum);
    node_atom.resize(inum);
    for (int ii = 0; ii < inum; ++ii) {
      const int i = ilist[ii];
      local_of_tag[tag[i]] = ii;
      node_atom[ii] = i;
      graph.species.push_back(map[type[i]]);
    }
  } else {
    graph.clear(nlocal);
    node_atom.resize(nlocal);
    for (int i = 0; i < nlocal; ++i) {
      node_atom[i] = i;
      graph.species.push_back(map[type[i]]);
    }
    ghost_node.assign(nall - nlocal, -1);
  }

  for (int ii = 0; ii < inum; ++ii) {
    const int i = ilist[ii];
    const double xi = x[i][0], yi = x[i][1], zi = x[i][2];
    const int node_i = policy == FOLD_GHOSTS ? ii : i;
    const int *jlist = firstneigh[i];
    const int jnum = numneigh[i];
    for (int jj = 0; jj < jnum; ++jj) {
      const int j = jlist[jj] & NEIGHMASK;
      const double dx = x[j][0] - xi, dy = x[j][1] - yi, dz = x[j][2] - zi;
      if (dx * dx + dy * dy + dz * dz >= cutoff_sq) continue;
      int node_j = j;
      if (policy == FOLD_GHOSTS) {
        node_j = local_of_tag[tag[j]];
        if (node_j < 0) continue;    // not an atom of the list (neigh_modify include)
      } else if (j >= nlocal) {
        int &g = ghost_node[j - nlocal];
        if (g < 0) {
          g = (int) node_atom.size();
          node_atom.push_back(j);
          graph.species.push_back(map[type[j]]);
        }
        node_j = g;
      }
      graph.src.push_back(node_i);
      graph.dst.push_back(node_j);
      graph.vec.insert(graph.vec.end(), {(float) dx, (float) dy, (float) dz});
    }
  }
}

void PairE3GNNBase::tally()
{
  double **f = atom->f;
  const int64_t ne = graph.num_edges();
  const float *g = result.dedr.data();
  const float *r = graph.vec.data();
  double v[6] = {0, 0, 0, 0, 0, 0};
  for (int64_t e = 0; e < ne; ++e) {
    const double gx = g[3 * e], gy = g[3 * e + 1], gz = g[3 * e + 2];
    const int i = node_atom[graph.src[e]], j = node_atom[graph.dst[e]];
    f[i][0] += gx;
    f[i][1] += gy;
    f[i][2] += gz;
    f[j][0] -= gx;
    f[j][1] -= gy;
    f[j][2] -= gz;
    if (vflag_either) {
      const double rx = r[3 * e], ry = r[3 * e + 1], rz = r[3 * e + 2];
      // in LAMMPS order xx yy zz xy xz yz (the components SevenNet's serial style uses)
      const double w[6] = {-rx * gx, -ry * gy, -rz * gz, -rx * gy, -rz * gx, -ry * gz};
      for (int k = 0; k < 6; ++k) v[k] += w[k];
      if (vflag_atom)
        for (int k = 0; k < 6; ++k) vatom[j][k] += w[k];
    }
  }
  if (vflag_global)
    for (int k = 0; k < 6; ++k) virial[k] += v[k];
  if (eflag_global) eng_vdwl += result.energy;
  if (eflag_atom) {
    const float *ea = result.atomic_energy.data();
    for (int64_t k = 0; k < graph.nlocal; ++k) eatom[node_atom[k]] += ea[k];
  }
}
