/* What nlmd's SevenNet pair styles (e3gnn, e3gnn/parallel) share with each other and not with Pair: a
   many-body style with one `pair_coeff * * <model> <elements>`, no single(), no restart data, the virial
   computed from the edge vectors (not fdotr), and the per-type arrays sized the same way. */
#ifndef NLMD_PAIR_E3GNN_BASE_H
#define NLMD_PAIR_E3GNN_BASE_H

#include "atom.h"
#include "force.h"    // CENTROID_NOTAVAIL
#include "memory.h"
#include "pair.h"

namespace LAMMPS_NS {

class PairE3GNNBase : public Pair {
 public:
  explicit PairE3GNNBase(class LAMMPS *lmp) : Pair(lmp)
  {
    single_enable = 0;
    restartinfo = 0;
    one_coeff = 1;
    manybody_flag = 1;
    no_virial_fdotr_compute = 1;    // the virial comes from the edge vectors, see compute()
    centroidstressflag = CENTROID_NOTAVAIL;
  }

  ~PairE3GNNBase() override
  {
    if (allocated) {
      memory->destroy(setflag);
      memory->destroy(cutsq);
      memory->destroy(map);
    }
  }

 protected:
  // setflag, cutsq and map (type -> model species index) for the current atom types, nothing set yet
  void allocate()
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
};

}    // namespace LAMMPS_NS

#endif
